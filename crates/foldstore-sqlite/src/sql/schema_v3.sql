-- foldstore SQLite schema, version 3 (PRAGMA user_version = 3): tracking. Applied on
-- top of version 2, in the same transaction as the version bump, when foldstore opens
-- an older file; runnable by hand after schema_v2.sql.
--
-- Design notes:
-- * tracking holds, per source, the position up to which a writer processed it
--   (foldstore_core::transaction::Tracking). The writer reads and replaces a source's
--   row in the transaction that appends the events, so the events and the position
--   commit together or not at all.
-- * A position is an opaque 128-bit number (a foldstore PostgreSQL position does not
--   fit SQLite's 64-bit integers): it is stored as its decimal text and compared by
--   the writer, never by SQL.

CREATE TABLE tracking (
    source   TEXT NOT NULL PRIMARY KEY,
    position TEXT NOT NULL
) WITHOUT ROWID;
