-- foldstore PostgreSQL schema, version 2: Dynamic Consistency Boundary (tags, query
-- reads, conditional appends) and snapshots.
--
-- Applied like 0001_initial.sql (one transaction, under the migration advisory lock,
-- with search_path set to the schema); by hand, after version 1:
--
--   BEGIN;
--   SET LOCAL search_path TO foldstore;
--   \i 0002_dcb_and_snapshots.sql
--   INSERT INTO schema_version (version) VALUES (2);
--   COMMIT;
--
-- Processes running an older foldstore must be stopped first: the append function
-- takes new parameters.

-- An event's tags, in the order given; NULL when it has none (version 1 events have
-- none, so nothing is backfilled). Reads return them without a join.
ALTER TABLE events ADD COLUMN tags text[];

-- One row per distinct tag of an event. A query item with tags walks the rows of its
-- first tag in global order, (tx, seq), and checks the item's other tags and types on
-- the event row.
CREATE TABLE event_tags (
    tag text   NOT NULL,
    tx  xid8   NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (tag, tx, seq)
);

-- Query items with types but no tags: one type's events in global order.
CREATE INDEX events_type ON events (event_type, tx, seq);

-- A stream's folded state per state type; saved and loaded by SnapshotStore.
CREATE TABLE snapshots (
    stream         text        NOT NULL,
    state_type     text        NOT NULL,
    schema_version bigint      NOT NULL,
    revision       bigint      NOT NULL,
    data           bytea       NOT NULL,
    recorded_at    timestamptz NOT NULL,
    PRIMARY KEY (stream, state_type)
);

-- Conditional appends and concurrency (READ COMMITTED).
--
-- An append condition says "fail if an event matching query Q exists after position
-- P". The check is a statement in the append's transaction. Under READ COMMITTED it
-- sees every transaction that committed before it started, but not one still in
-- flight: two conditional appends could each check, see nothing, and both commit
-- events the other's condition forbids. Transaction-level advisory locks close that
-- gap. Every key is a 64-bit hash of the schema name and one of:
--
--   tag:<tag>    type:<event type>    all
--
-- * Every append transaction takes SHARED locks on the keys its events could match:
--   tag:<t> for each tag of each event, type:<T> for each event type, and all.
-- * A conditional append takes EXCLUSIVE locks on keys that cover its query: for each
--   item with tags, tag:<one of its tags> (an event matching the item carries all of
--   them, so it holds that key); for each item with types only, type:<T> for each of
--   its types; for a query that matches everything, all.
--
-- So a writer whose events could match Q holds a shared lock on a key that Q's
-- appender needs exclusively: the appender waits until that writer has committed (or
-- rolled back), and a writer that comes later waits for the appender. The check then
-- runs in a statement that starts after the lock was granted, so it sees every
-- matching event that committed before; locks are released only after a commit is
-- visible. Shared locks never conflict with each other, so appends that no condition
-- looks at never wait for one another.
--
-- No deadlock: a transaction takes all its advisory locks first, in one call of
-- lock_keys with the keys sorted, each key once (exclusive where any of its appends
-- needs it), before any stream row is locked; stream rows are then locked in stream
-- name order. A hash collision between two keys only makes unrelated appends wait.
CREATE FUNCTION lock_keys(p_keys bigint[], p_exclusive boolean[])
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    i integer;
BEGIN
    FOR i IN 1..coalesce(cardinality(p_keys), 0) LOOP
        IF p_exclusive[i] THEN
            PERFORM pg_advisory_xact_lock(p_keys[i]);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(p_keys[i]);
        END IF;
    END LOOP;
END;
$$;

-- The first event after (p_after_tx, p_after_seq) that matches the query, seen from
-- the calling transaction. The query is passed item by item: p_types[i] and p_tags[i]
-- hold item i's types and tags joined by chr(31) (tags and types hold no control
-- characters), NULL for none; p_all means the query matches every event. Each probe
-- is an index range scan that stops at its first match.
CREATE FUNCTION first_match(
    p_all       boolean,
    p_after_tx  xid8,
    p_after_seq bigint,
    p_types     text[],
    p_tags      text[],
    OUT match_tx  xid8,
    OUT match_seq bigint
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET enable_seqscan = off
AS $$
DECLARE
    i       integer;
    v_types text[];
    v_tags  text[];
    v_type  text;
    v_tx    xid8;
    v_seq   bigint;
BEGIN
    IF p_all THEN
        SELECT e.tx, e.seq INTO match_tx, match_seq
          FROM events e
         WHERE (e.tx, e.seq) > (p_after_tx, p_after_seq)
         ORDER BY e.tx, e.seq
         LIMIT 1;
        RETURN;
    END IF;
    FOR i IN 1..coalesce(cardinality(p_types), 0) LOOP
        v_types := string_to_array(p_types[i], chr(31));
        v_tags := string_to_array(p_tags[i], chr(31));
        IF v_tags IS NOT NULL THEN
            SELECT t.tx, t.seq INTO v_tx, v_seq
              FROM event_tags t
              JOIN events e ON e.tx = t.tx AND e.seq = t.seq
             WHERE t.tag = v_tags[1]
               AND (t.tx, t.seq) > (p_after_tx, p_after_seq)
               AND e.tags @> v_tags
               AND (v_types IS NULL OR e.event_type = ANY (v_types))
             ORDER BY t.tx, t.seq
             LIMIT 1;
            IF v_tx IS NOT NULL AND (match_tx IS NULL OR (v_tx, v_seq) < (match_tx, match_seq)) THEN
                match_tx := v_tx;
                match_seq := v_seq;
            END IF;
        ELSE
            FOREACH v_type IN ARRAY v_types LOOP
                -- Planned for this type (EXECUTE): the planner walks events_type for a
                -- rare type and the global order for a common one; a cached generic
                -- plan would pick one of the two for every type.
                EXECUTE 'SELECT e.tx, e.seq FROM events e
                          WHERE e.event_type = $1 AND (e.tx, e.seq) > ($2, $3)
                          ORDER BY e.tx, e.seq LIMIT 1'
                   INTO v_tx, v_seq
                  USING v_type, p_after_tx, p_after_seq;
                IF v_tx IS NOT NULL AND (match_tx IS NULL OR (v_tx, v_seq) < (match_tx, match_seq)) THEN
                    match_tx := v_tx;
                    match_seq := v_seq;
                END IF;
            END LOOP;
        END IF;
    END LOOP;
END;
$$;

DROP FUNCTION append(text, text, bigint, bigint, smallint, bigint, uuid[], text[], text[],
                     bytea[], text[]);

-- Appends events to a stream in one call (version 1's function, plus tags and an
-- optional condition).
--
-- p_tags: one element per event, its tags joined by chr(31), NULL for none.
-- p_cond: whether a condition is given; p_cond_* are first_match's arguments.
-- The new parameters have defaults, so a call with version 1's arguments appends
-- untagged events without a condition.
--
-- The checks run in the documented order: an append whose ids are stored is a retry
-- (facts returned; the condition is not checked); the expected revision (the stream
-- row update); then the condition. When the condition fails, the stream row update is
-- undone, nothing is written, and condition_tx/condition_seq name the first match.
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
    p_tags              text[]  DEFAULT NULL,
    p_cond              boolean DEFAULT false,
    p_cond_all          boolean DEFAULT false,
    p_cond_after_tx     xid8    DEFAULT '0',
    p_cond_after_seq    bigint  DEFAULT 0,
    p_cond_types        text[]  DEFAULT NULL,
    p_cond_tags         text[]  DEFAULT NULL,
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
    OUT stored_seqs      bigint[],
    OUT condition_tx     xid8,
    OUT condition_seq    bigint
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET enable_seqscan = off
AS $$
DECLARE
    v_count     bigint := cardinality(p_ids);
    v_stream_id bigint;
    v_attempt   integer;
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
            INSERT INTO streams (name, category, group_hash)
            VALUES (p_stream, p_category, p_group_hash)
            ON CONFLICT (name) DO NOTHING;
        END LOOP;

        IF v_stream_id IS NOT NULL AND p_cond THEN
            SELECT m.match_tx, m.match_seq INTO condition_tx, condition_seq
              FROM first_match(p_cond_all, p_cond_after_tx, p_cond_after_seq,
                               p_cond_types, p_cond_tags) m;
            IF condition_tx IS NOT NULL THEN
                -- Undo the revision bump; the row lock stays until the transaction ends.
                UPDATE streams s
                   SET last_revision = nullif(greatest(s.last_revision - v_count, -1), -1)
                 WHERE s.id = v_stream_id;
                v_stream_id := NULL;
            END IF;
        END IF;

        IF v_stream_id IS NOT NULL THEN
            first_revision := last_revision - v_count + 1;
            WITH inserted AS (
                INSERT INTO events (stream_id, category_hash, revision, id, event_type,
                                    content_type, data, metadata, recorded_at, tags)
                SELECT v_stream_id, p_category_hash, first_revision + u.ord - 1, u.id,
                       u.event_type, u.content_type, u.data, u.metadata, v_now,
                       string_to_array(u.tags, chr(31))
                  FROM unnest(p_ids, p_types, p_content_types, p_datas, p_metadatas, p_tags)
                       WITH ORDINALITY
                       AS u(id, event_type, content_type, data, metadata, tags, ord)
                RETURNING events.tx, events.seq, events.revision, events.tags
            ),
            tagged AS (
                INSERT INTO event_tags (tag, tx, seq)
                SELECT DISTINCT t.tag, i.tx, i.seq
                  FROM inserted i
                 CROSS JOIN LATERAL unnest(i.tags) AS t(tag)
            )
            SELECT i.seq INTO last_seq FROM inserted i ORDER BY i.revision DESC LIMIT 1;
            tx := pg_current_xact_id();
            written := true;
            RETURN;
        END IF;
    END IF;

    -- Refused, a retry, or a failed condition: nothing written; report the facts.
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
