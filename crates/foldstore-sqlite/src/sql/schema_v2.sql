-- foldstore SQLite schema, version 2 (PRAGMA user_version = 2): Dynamic Consistency
-- Boundary tags and snapshots. Applied on top of version 1, in the same transaction as
-- the version bump, when foldstore opens an older file; runnable by hand after
-- schema_v1.sql.
--
-- Design notes:
-- * An event's tags are stored twice. events.tags holds them as a JSON array of
--   strings in the order given (NULL when there are none, so untagged rows stay as
--   small as in version 1): reads return them without a join. event_tags holds one row
--   per distinct tag of an event, keyed (tag, position) WITHOUT ROWID: the rows of one
--   tag are adjacent and in position order, so a query item with tags walks only the
--   positions of its first tag and checks the others by primary-key lookups. Events
--   of version 1 files have no tags, so the migration needs no backfill.
-- * events_by_type serves query items that name event types but no tags: an index on
--   event_type alone is ordered by position (the row id) within a type. It costs one
--   more index entry per appended event.
-- * snapshots are keyed by stream name and state type; a save replaces the row only
--   under foldstore_core::snapshot::should_replace, decided by the writer.

ALTER TABLE events ADD COLUMN tags TEXT;

CREATE TABLE event_tags (
    tag      TEXT    NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (tag, position)
) WITHOUT ROWID;

CREATE INDEX events_by_type ON events (event_type);

CREATE TABLE snapshots (
    stream         TEXT    NOT NULL,
    state_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    revision       INTEGER NOT NULL,
    data           BLOB    NOT NULL,
    -- Microseconds since the Unix epoch (UTC), as given by the saver.
    recorded_at    INTEGER NOT NULL,
    PRIMARY KEY (stream, state_type)
) WITHOUT ROWID;
