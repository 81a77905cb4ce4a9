-- foldstore PostgreSQL schema, version 1.
--
-- foldstore runs this file inside one transaction, under an advisory lock, after
-- `SET LOCAL search_path TO <schema>`; every function captures that search path
-- (`SET search_path FROM CURRENT`). To apply it by hand:
--
--   BEGIN;
--   CREATE SCHEMA foldstore;
--   SET LOCAL search_path TO foldstore;
--   \i 0001_initial.sql
--   INSERT INTO schema_version (version) VALUES (1);
--   COMMIT;
--
-- Requires PostgreSQL 13 or newer (xid8, pg_current_xact_id, pg_snapshot_xmin).

-- One row per stream ever named by an append, a delete, a tombstone or metadata.
CREATE TABLE streams (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text    NOT NULL UNIQUE,
    -- The part of the name before the first '-' (foldstore_core::category_of).
    category       text    NOT NULL,
    -- foldstore_core::group_hash(id part of the name): consumer groups filter on
    -- group_hash % size = member.
    group_hash     bigint  NOT NULL,
    -- The revision of the last event ever written (deleted or not); NULL: none.
    last_revision  bigint,
    -- Revisions below this were soft-deleted.
    deleted_before bigint  NOT NULL DEFAULT 0,
    tombstoned     boolean NOT NULL DEFAULT false,
    -- foldstore_core::StreamMetadata as JSON; NULL: never set.
    metadata       jsonb
);

CREATE INDEX streams_category ON streams (category);

CREATE SEQUENCE events_seq AS bigint;

-- The log. An event's position is the pair (tx, seq): tx is the writing transaction's
-- id, seq a sequence value. Readers of the global order only look at rows whose tx is
-- below the oldest transaction still running (pg_snapshot_xmin), and page by
-- (tx, seq): every transaction below that horizon has finished, so no row can later
-- appear below a position a reader has passed.
CREATE TABLE events (
    tx           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq          bigint      NOT NULL DEFAULT nextval('events_seq'),
    stream_id    bigint      NOT NULL,
    -- foldstore_core::group_hash(category of the stream): category reads scan the
    -- events_category index on it and recheck the category by name, so a hash
    -- collision costs a little reading, never a wrong answer.
    category_hash bigint     NOT NULL,
    revision     bigint      NOT NULL,
    id           uuid        NOT NULL,
    event_type   text        NOT NULL,
    content_type text        NOT NULL,
    data         bytea       NOT NULL,
    -- The metadata object's JSON text exactly as appended (checked by foldstore).
    metadata     text        NOT NULL,
    recorded_at  timestamptz NOT NULL,
    PRIMARY KEY (tx, seq),
    -- Event ids are the idempotency key of appends, and the final guard against two
    -- concurrent identical appends: never weaken this to ON CONFLICT DO NOTHING.
    CONSTRAINT events_id_unique UNIQUE (id),
    CONSTRAINT events_stream_revision_unique UNIQUE (stream_id, revision)
);

ALTER SEQUENCE events_seq OWNED BY events.seq;

-- A category's events in global order: category reads and subscriptions scan only
-- them, however rare the category is in the log.
CREATE INDEX events_category ON events (category_hash, tx, seq);

-- Bumped by deletes, tombstones and metadata changes, so that pollers in other
-- processes wake stream subscriptions for changes that add no event.
CREATE TABLE changes (
    id      integer PRIMARY KEY CHECK (id = 1),
    counter bigint  NOT NULL
);
INSERT INTO changes (id, counter) VALUES (1, 0);

-- Appends events to a stream in one call.
--
-- p_expected_kind: 0 any, 1 no stream, 2 stream exists, 3 exact p_expected_revision.
--
-- Fast path (no id stored, stream not tombstoned, expectation met): the stream row is
-- updated first -- under its row lock, before any sequence value is taken -- then the
-- events are inserted; returns written = true, the first revision, the transaction id
-- and the sequence number of the last event.
--
-- Otherwise nothing is written and the function returns the facts foldstore decides
-- on (foldstore_core::rules::plan_append): the stream's state and, for each id, where
-- it is stored. It never raises for a refused append; a unique violation on
-- events_id_unique means a concurrent append with the same ids committed in between,
-- and the caller retries to get the facts.
CREATE FUNCTION append(
    p_stream            text,
    p_category          text,
    p_group_hash        bigint,
    p_category_hash     bigint,
    p_expected_kind     smallint,
    p_expected_revision bigint,
    p_ids               uuid[],
    p_types             text[],
    p_content_types     text[],
    p_datas             bytea[],
    p_metadatas         text[],
    OUT written          boolean,
    OUT first_revision   bigint,
    OUT tx               xid8,
    OUT last_seq         bigint,
    OUT last_revision    bigint,
    OUT deleted_before   bigint,
    OUT tombstoned       boolean,
    OUT stored_streams   text[],
    OUT stored_revisions bigint[],
    OUT stored_txs       xid8[],
    OUT stored_seqs      bigint[]
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
-- Every statement here has an index path (event ids, stream names). PL/pgSQL caches
-- generic plans per session; one planned while the log was small would otherwise keep
-- scanning the whole log for each append as it grows, until the next ANALYZE.
SET enable_seqscan = off
AS $$
DECLARE
    v_count     bigint := cardinality(p_ids);
    v_stream_id bigint;
    v_attempt   integer;
    -- One time for the whole append: its events commit together.
    v_now       timestamptz := clock_timestamp();
BEGIN
    written := false;
    IF NOT EXISTS (SELECT 1 FROM events e WHERE e.id = ANY (p_ids)) THEN
        FOR v_attempt IN 1..2 LOOP
            UPDATE streams s
               SET last_revision = coalesce(s.last_revision, -1) + v_count
             WHERE s.name = p_stream
               AND NOT s.tombstoned
               AND (p_expected_kind = 0
                    OR (p_expected_kind = 1
                        AND (s.last_revision IS NULL OR s.last_revision < s.deleted_before))
                    OR (p_expected_kind = 2 AND s.last_revision >= s.deleted_before)
                    OR (p_expected_kind = 3 AND s.last_revision = p_expected_revision
                        AND s.last_revision >= s.deleted_before))
            RETURNING s.id, s.last_revision INTO v_stream_id, last_revision;
            EXIT WHEN FOUND OR v_attempt = 2;
            -- No row matched: the stream may not exist yet. Create it (or wait for a
            -- concurrent creator) and try once more.
            INSERT INTO streams (name, category, group_hash)
            VALUES (p_stream, p_category, p_group_hash)
            ON CONFLICT (name) DO NOTHING;
        END LOOP;

        IF v_stream_id IS NOT NULL THEN
            first_revision := last_revision - v_count + 1;
            WITH inserted AS (
                INSERT INTO events (stream_id, category_hash, revision, id, event_type,
                                    content_type, data, metadata, recorded_at)
                SELECT v_stream_id, p_category_hash, first_revision + u.ord - 1, u.id,
                       u.event_type,
                       u.content_type, u.data, u.metadata, v_now
                  FROM unnest(p_ids, p_types, p_content_types, p_datas, p_metadatas)
                       WITH ORDINALITY AS u(id, event_type, content_type, data, metadata, ord)
                RETURNING events.seq, events.revision
            )
            SELECT i.seq INTO last_seq FROM inserted i ORDER BY i.revision DESC LIMIT 1;
            tx := pg_current_xact_id();
            written := true;
            RETURN;
        END IF;
    END IF;

    -- Refused or a retry: nothing written; report the facts.
    SELECT s.last_revision, s.deleted_before, s.tombstoned
      INTO last_revision, deleted_before, tombstoned
      FROM streams s
     WHERE s.name = p_stream;
    SELECT array_agg(s.name ORDER BY u.ord),
           array_agg(e.revision ORDER BY u.ord),
           array_agg(e.tx ORDER BY u.ord),
           array_agg(e.seq ORDER BY u.ord)
      INTO stored_streams, stored_revisions, stored_txs, stored_seqs
      FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord)
      LEFT JOIN events e ON e.id = u.id
      LEFT JOIN streams s ON s.id = e.stream_id;
END;
$$;
