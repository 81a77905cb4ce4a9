-- foldstore PostgreSQL schema, version 4: transactions (several streams, a condition
-- and tracking, all or nothing) and tracking.
--
-- Applied like 0001_initial.sql (one transaction, under the migration advisory lock,
-- with search_path set to the schema); by hand, after version 3:
--
--   BEGIN;
--   SET LOCAL search_path TO foldstore;
--   \i 0004_transactions.sql
--   INSERT INTO schema_version (version) VALUES (4);
--   COMMIT;
--
-- Processes running an older foldstore must be stopped first: append_batch() returns
-- a new column. append() stays for compatibility; foldstore no longer calls it.

-- How far a writer has processed each source (foldstore_core::transaction::Tracking),
-- written in the transaction that appends the events. A position is an opaque
-- 128-bit number (a foldstore position of another PostgreSQL store does not fit a
-- bigint), so it is a numeric.
CREATE TABLE tracking (
    source   text    PRIMARY KEY,
    position numeric NOT NULL
);

-- Locks (and creates, when missing) the rows of the named streams, in byte order of the
-- names, each once. A group commit that holds a transaction of several streams calls it
-- first, after lock_keys, so that the transaction takes all its stream-row locks in
-- one order whatever order its appends name them in: two group commits then never wait
-- on each other in a cycle. ON CONFLICT DO UPDATE .. WHERE false locks an existing row
-- without changing it.
CREATE FUNCTION lock_streams(
    p_streams      text[],
    p_categories   text[],
    p_group_hashes bigint[]
)
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET enable_seqscan = off
AS $$
BEGIN
    INSERT INTO streams AS s (name, category, group_hash)
    SELECT DISTINCT ON (u.name COLLATE "C") u.name, u.category, u.group_hash
      FROM unnest(p_streams, p_categories, p_group_hashes) AS u(name, category, group_hash)
     ORDER BY u.name COLLATE "C"
    ON CONFLICT (name) DO UPDATE SET last_revision = s.last_revision WHERE false;
END;
$$;

DROP FUNCTION append_batch(text[], text[], bigint[], bigint[], smallint[], bigint[],
                           integer[], integer[], integer[], uuid[], text[], text[],
                           bytea[], text[], text[]);

-- Version 3's append_batch(), returning also the first event's sequence number of each
-- written append (out_first_seq), so that a result can name its first position.
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
    out_first_seq      bigint,
    out_last_seq       bigint
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET enable_seqscan = off
AS $$
DECLARE
    v_n         integer := cardinality(p_streams);
    v_now       timestamptz := clock_timestamp();
    v_blocked   boolean[] := array_fill(false, ARRAY[v_n]);
    v_stream    bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_first     bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_first_seq bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_last_seq  bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_append    integer;
    v_stored    uuid;
    v_id        bigint;
    v_value     bigint;
    v_low       bigint;
BEGIN
    -- The steps and their reasons are those of version 3 (0003_append_batch.sql).
    FOR v_stored IN
        SELECT e.id FROM events e WHERE e.id = ANY (p_ids)
    LOOP
        v_blocked[p_event_appends[array_position(p_ids, v_stored)]] := true;
    END LOOP;

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

    FOR v_append, v_low, v_value IN
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
        SELECT m.a, min(i.seq), max(i.seq)
          FROM inserted i
          JOIN unnest(v_stream) WITH ORDINALITY AS m(stream_id, a)
            ON m.stream_id = i.stream_id
         GROUP BY m.a
    LOOP
        v_first_seq[v_append] := v_low;
        v_last_seq[v_append] := v_value;
    END LOOP;

    RETURN QUERY
        SELECT v_first[a] IS NOT NULL, v_first[a], pg_current_xact_id(), v_first_seq[a],
               v_last_seq[a]
          FROM generate_series(1, v_n) AS a
         ORDER BY a;
END;
$$;

-- Writes one transaction all or nothing: the events of several streams (parts), an
-- optional condition, optional tracking. It never raises for a refused transaction:
-- it writes nothing and returns the facts foldstore decides on
-- (foldstore_core::rules::plan_transaction and check_tracking), as append() does.
--
-- Parts: one element of p_streams .. p_counts per part, the streams distinct;
-- p_kinds and p_revisions as append()'s p_expected_kind and p_expected_revision. Events:
-- one element of p_event_parts .. p_tags per event, part after part: p_event_parts holds
-- the (1-based) index of its part, p_event_offsets its 0-based index within the part.
-- The condition: p_cond and first_match()'s arguments. Tracking: p_tracking_source
-- (NULL: none) and p_tracking_position.
--
-- The checks run in the documented order:
-- 1. an id already stored: nothing is written (a retry, or a refusal);
-- 2. each part's stream row is updated under its row lock, in byte order of the names,
--    where its expectation holds (version 1's append(), per part); the first part whose
--    expectation does not hold (or whose stream is tombstoned) stops the transaction;
-- 3. the tracking: refused when the stored position is not below p_tracking_position.
--    A concurrent transaction with the same source cannot slip in between: the caller
--    holds the source's advisory lock (lock_keys, `tracking:<source>`, exclusive);
-- 4. the condition (first_match());
-- 5. the events, in part order, their tags, and the tracking row.
-- When 2 to 4 refuse, the revision bumps already made are undone (the row locks stay
-- until the transaction ends), and the facts are returned: each part's stream state,
-- where each id is stored, the first match of the condition if it was checked, and the
-- stored tracking position.
CREATE FUNCTION append_transaction(
    p_streams             text[],
    p_categories          text[],
    p_group_hashes        bigint[],
    p_category_hashes     bigint[],
    p_kinds               smallint[],
    p_revisions           bigint[],
    p_counts              integer[],
    p_event_parts         integer[],
    p_event_offsets       integer[],
    p_ids                 uuid[],
    p_types               text[],
    p_content_types       text[],
    p_datas               bytea[],
    p_metadatas           text[],
    p_tags                text[],
    p_cond                boolean,
    p_cond_all            boolean,
    p_cond_after_tx       xid8,
    p_cond_after_seq      bigint,
    p_cond_types          text[],
    p_cond_tags           text[],
    p_tracking_source     text,
    p_tracking_position   numeric,
    OUT written           boolean,
    OUT tx                xid8,
    OUT first_revisions   bigint[],
    OUT first_seq         bigint,
    OUT last_seq          bigint,
    OUT last_revisions    bigint[],
    OUT deleted_befores   bigint[],
    OUT tombstones        boolean[],
    OUT stored_streams    text[],
    OUT stored_revisions  bigint[],
    OUT stored_txs        xid8[],
    OUT stored_seqs       bigint[],
    OUT condition_tx      xid8,
    OUT condition_seq     bigint,
    OUT tracked_position  numeric
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET enable_seqscan = off
AS $$
DECLARE
    v_n         integer := coalesce(cardinality(p_streams), 0);
    v_now       timestamptz := clock_timestamp();
    v_stream    bigint[] := array_fill(NULL::bigint, ARRAY[v_n]);
    v_ok        boolean := true;
    v_a         integer;
    v_attempt   integer;
    v_id        bigint;
    v_last      bigint;
BEGIN
    written := false;
    first_revisions := array_fill(NULL::bigint, ARRAY[v_n]);

    -- 1. Stored ids.
    IF EXISTS (SELECT 1 FROM events e WHERE e.id = ANY (p_ids)) THEN
        v_ok := false;
    END IF;

    -- 2. The parts' stream rows, in byte order of the names.
    IF v_ok THEN
        FOR v_a IN
            SELECT u.a FROM unnest(p_streams) WITH ORDINALITY AS u(name, a)
             ORDER BY u.name COLLATE "C"
        LOOP
            v_id := NULL;
            FOR v_attempt IN 1..2 LOOP
                UPDATE streams s
                   SET last_revision = coalesce(s.last_revision, -1) + p_counts[v_a]
                 WHERE s.name = p_streams[v_a]
                   AND NOT s.tombstoned
                   AND (p_kinds[v_a] = 0
                        OR (p_kinds[v_a] = 1
                            AND (s.last_revision IS NULL OR s.last_revision < s.deleted_before))
                        OR (p_kinds[v_a] = 2 AND s.last_revision >= s.deleted_before)
                        OR (p_kinds[v_a] = 3 AND s.last_revision = p_revisions[v_a]
                            AND s.last_revision >= s.deleted_before))
                RETURNING s.id, s.last_revision INTO v_id, v_last;
                EXIT WHEN v_id IS NOT NULL OR v_attempt = 2;
                -- No row matched: the stream may not exist yet. Create it (or wait for
                -- a concurrent creator) and try once more.
                INSERT INTO streams (name, category, group_hash)
                VALUES (p_streams[v_a], p_categories[v_a], p_group_hashes[v_a])
                ON CONFLICT (name) DO NOTHING;
            END LOOP;
            IF v_id IS NULL THEN
                v_ok := false;
                EXIT;
            END IF;
            v_stream[v_a] := v_id;
            first_revisions[v_a] := v_last - p_counts[v_a] + 1;
        END LOOP;
    END IF;

    -- 3. Tracking.
    IF p_tracking_source IS NOT NULL THEN
        SELECT t.position INTO tracked_position FROM tracking t
         WHERE t.source = p_tracking_source;
        IF v_ok AND tracked_position >= p_tracking_position THEN
            v_ok := false;
        END IF;
    END IF;

    -- 4. The condition.
    IF v_ok AND p_cond THEN
        SELECT m.match_tx, m.match_seq INTO condition_tx, condition_seq
          FROM first_match(p_cond_all, p_cond_after_tx, p_cond_after_seq,
                           p_cond_types, p_cond_tags) m;
        IF condition_tx IS NOT NULL THEN
            v_ok := false;
        END IF;
    END IF;

    -- 5. Write.
    IF v_ok THEN
        IF v_n > 0 THEN
            WITH inserted AS (
                INSERT INTO events (stream_id, category_hash, revision, id, event_type,
                                    content_type, data, metadata, recorded_at, tags)
                SELECT v_stream[u.p], p_category_hashes[u.p], first_revisions[u.p] + u.off,
                       u.id, u.event_type, u.content_type, u.data, u.metadata, v_now,
                       string_to_array(u.tags, chr(31))
                  FROM unnest(p_event_parts, p_event_offsets, p_ids, p_types,
                              p_content_types, p_datas, p_metadatas, p_tags)
                       WITH ORDINALITY
                       AS u(p, off, id, event_type, content_type, data, metadata, tags, ord)
                 ORDER BY u.ord
                RETURNING events.tx, events.seq, events.tags
            ),
            tagged AS (
                INSERT INTO event_tags (tag, tx, seq)
                SELECT DISTINCT t.tag, i.tx, i.seq
                  FROM inserted i
                 CROSS JOIN LATERAL unnest(i.tags) AS t(tag)
            )
            SELECT min(i.seq), max(i.seq) INTO first_seq, last_seq FROM inserted i;
        END IF;
        IF p_tracking_source IS NOT NULL THEN
            INSERT INTO tracking AS t (source, position)
            VALUES (p_tracking_source, p_tracking_position)
            ON CONFLICT (source) DO UPDATE SET position = excluded.position;
        END IF;
        tx := pg_current_xact_id();
        written := true;
        RETURN;
    END IF;

    -- Refused, a retry, or a race: undo the revision bumps, report the facts.
    FOR v_a IN 1..v_n LOOP
        IF v_stream[v_a] IS NOT NULL THEN
            UPDATE streams s
               SET last_revision = nullif(greatest(s.last_revision - p_counts[v_a], -1), -1)
             WHERE s.id = v_stream[v_a];
        END IF;
    END LOOP;
    SELECT array_agg(s.last_revision ORDER BY u.a),
           array_agg(s.deleted_before ORDER BY u.a),
           array_agg(s.tombstoned ORDER BY u.a)
      INTO last_revisions, deleted_befores, tombstones
      FROM unnest(p_streams) WITH ORDINALITY AS u(name, a)
      LEFT JOIN streams s ON s.name = u.name;
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
