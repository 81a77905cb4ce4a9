-- foldstore PostgreSQL schema, version 3: a group commit's appends in one call.
--
-- Applied like 0001_initial.sql (one transaction, under the migration advisory lock,
-- with search_path set to the schema); by hand, after version 2:
--
--   BEGIN;
--   SET LOCAL search_path TO foldstore;
--   \i 0003_append_batch.sql
--   INSERT INTO schema_version (version) VALUES (3);
--   COMMIT;
--
-- Version 2's writer calls append() once per append of a group commit. Each call runs
-- four or five statements of its own, so with many one-event appends the server spent
-- most of its time starting and finishing statements rather than writing rows.
-- append_batch() writes all the unconditional appends of a group with one statement
-- per step, whatever their number. append() stays: conditional appends use it, and so
-- does every append that append_batch() leaves unwritten (see below), because append()
-- returns the facts a refusal is decided on.

-- Appends several streams' events in one call.
--
-- One element of p_streams .. p_counts per append; the stream names must be distinct
-- (the caller puts a second append to the same stream into a later call of the same
-- transaction). p_kinds and p_revisions are append()'s p_expected_kind and
-- p_expected_revision. One element of p_event_appends .. p_tags per event, every
-- append's events in order, one append after the other: p_event_appends holds the
-- (1-based) index of the event's append, p_event_offsets its 0-based index within that
-- append.
--
-- Returns one row per append, in order. out_written = true: the events were inserted;
-- out_first_revision is the first event's revision, out_tx and out_last_seq the last
-- event's position. out_written = false: nothing of that append was written, because
-- one of its ids is already stored, the stream is tombstoned, or the expected revision
-- does not hold; the caller runs it again through append() to learn which (a retry, a
-- refusal, or, if the stream changed meanwhile, a success).
--
-- Locking: one statement locks every stream row the call touches, creating the rows
-- that do not exist yet, in byte order of the names, before any event sequence value
-- is taken. append() locks and creates stream rows in the same order (the writer sorts
-- a transaction's appends by name), so transactions of any mix of the two never wait
-- on each other in a cycle.
CREATE FUNCTION append_batch(
    p_streams         text[],
    p_categories      text[],
    p_group_hashes    bigint[],
    p_category_hashes bigint[],
    p_kinds           smallint[],
    p_revisions       bigint[],
    p_counts          integer[],
    p_event_appends   integer[],
    p_event_offsets   integer[],
    p_ids             uuid[],
    p_types           text[],
    p_content_types   text[],
    p_datas           bytea[],
    p_metadatas       text[],
    p_tags            text[]
)
RETURNS TABLE (
    out_written        boolean,
    out_first_revision bigint,
    out_tx             xid8,
    out_last_seq       bigint
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
-- As in append(): every statement here has an index path, and a cached generic plan
-- made while the log was small must not keep scanning it as it grows.
SET enable_seqscan = off
AS $$
DECLARE
    v_n         integer := cardinality(p_streams);
    -- One time for the whole call: its events commit together.
    v_now       timestamptz := clock_timestamp();
    -- Per append: one of its ids is stored already.
    v_blocked   boolean[] := array_fill(false, ARRAY[v_n]);
    -- Per append, when written: its stream's row id, first revision, last sequence.
    v_stream    bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_first     bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_last_seq  bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_append    integer;
    v_stored    uuid;
    v_id        bigint;
    v_value     bigint;
BEGIN
    -- 1. Appends with a stored id are left to append(), which says where it is stored.
    --    (A concurrent append that commits the same id after this check makes the
    --    insert below fail on events_id_unique; the caller then runs the whole group
    --    through append().)
    --    `id = ANY (..)` probes the id index once per id whatever the planner thinks of
    --    the array's size (a join with unnest() could be planned as a scan of the
    --    whole index).
    FOR v_stored IN
        SELECT e.id FROM events e WHERE e.id = ANY (p_ids)
    LOOP
        v_blocked[p_event_appends[array_position(p_ids, v_stored)]] := true;
    END LOOP;

    -- 2. Lock or create each stream row, in byte order of the names, and move the
    --    revision of each append whose expectation holds. ON CONFLICT DO UPDATE locks
    --    the existing row even where its WHERE is false (then the row is neither
    --    changed nor returned), so every row ends up locked by this transaction.
    --    A new row is a new stream: "any" and "no stream" hold for it.
    --    RETURNING yields the rows written to: updated ones, and inserted ones, whose
    --    last_revision is NULL when their append is not written.
    FOR v_append, v_id, v_value IN
        WITH w AS (
            INSERT INTO streams AS s (name, category, group_hash, last_revision)
            SELECT u.name, u.category, u.group_hash,
                   CASE WHEN NOT v_blocked[u.a] AND p_kinds[u.a] IN (0, 1)
                        THEN p_counts[u.a] - 1 END
              FROM unnest(p_streams, p_categories, p_group_hashes)
                   WITH ORDINALITY AS u(name, category, group_hash, a)
             ORDER BY u.name COLLATE "C"
            ON CONFLICT (name) DO UPDATE
               SET last_revision = coalesce(s.last_revision, -1)
                                   + p_counts[array_position(p_streams, excluded.name)]
             WHERE NOT s.tombstoned
               AND (SELECT NOT v_blocked[x.a]
                           AND (p_kinds[x.a] = 0
                                OR (p_kinds[x.a] = 1
                                    AND (s.last_revision IS NULL
                                         OR s.last_revision < s.deleted_before))
                                OR (p_kinds[x.a] = 2
                                    AND s.last_revision >= s.deleted_before)
                                OR (p_kinds[x.a] = 3
                                    AND s.last_revision = p_revisions[x.a]
                                    AND s.last_revision >= s.deleted_before))
                      FROM (SELECT array_position(p_streams, excluded.name) AS a) x)
            RETURNING s.id, s.name, s.last_revision
        )
        SELECT u.a, w.id, w.last_revision
          FROM w
          JOIN unnest(p_streams) WITH ORDINALITY AS u(name, a) ON u.name = w.name
         WHERE w.last_revision IS NOT NULL
    LOOP
        v_stream[v_append] := v_id;
        v_first[v_append] := v_value - p_counts[v_append] + 1;
    END LOOP;

    -- 3. The events of the written appends, in order, so that sequence values follow
    --    revisions within each stream; then their tags. A stream appears once per
    --    call, so its id names the append.
    FOR v_append, v_value IN
        WITH inserted AS (
            INSERT INTO events (stream_id, category_hash, revision, id, event_type,
                                content_type, data, metadata, recorded_at, tags)
            SELECT v_stream[u.a], p_category_hashes[u.a], v_first[u.a] + u.off, u.id,
                   u.event_type, u.content_type, u.data, u.metadata, v_now,
                   string_to_array(u.tags, chr(31))
              FROM unnest(p_event_appends, p_event_offsets, p_ids, p_types,
                          p_content_types, p_datas, p_metadatas, p_tags)
                   WITH ORDINALITY
                   AS u(a, off, id, event_type, content_type, data, metadata, tags, ord)
             WHERE v_first[u.a] IS NOT NULL
             ORDER BY u.ord
            RETURNING events.stream_id, events.tx, events.seq, events.tags
        ),
        tagged AS (
            INSERT INTO event_tags (tag, tx, seq)
            SELECT DISTINCT t.tag, i.tx, i.seq
              FROM inserted i
             CROSS JOIN LATERAL unnest(i.tags) AS t(tag)
        )
        SELECT m.a, max(i.seq)
          FROM inserted i
          JOIN unnest(v_stream) WITH ORDINALITY AS m(stream_id, a)
            ON m.stream_id = i.stream_id
         GROUP BY m.a
    LOOP
        v_last_seq[v_append] := v_value;
    END LOOP;

    RETURN QUERY
        SELECT v_first[a] IS NOT NULL, v_first[a], pg_current_xact_id(), v_last_seq[a]
          FROM generate_series(1, v_n) AS a
         ORDER BY a;
END;
$$;
