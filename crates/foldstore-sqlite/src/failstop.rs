//! Disk errors during a write. A full disk refuses writes while it is full and the
//! store takes them again by itself once there is room; an error that leaves what is
//! on the disk in doubt (a failed `fsync`) stops all writes until the store is
//! reopened (fail-stop).
//!
//! ## A full disk: refuse, keep reading, resume
//!
//! `SQLITE_FULL` means that a `write()` of one of the store's files got `ENOSPC` (or
//! wrote less than asked, which SQLite reports the same way): the kernel did not take
//! the bytes, so no dirty page holds data the disk may later drop, and nothing is in
//! doubt. The writer rolls the batch back, answers each of its requests
//! [`BackendErrorKind::StorageFull`] ("nothing of it was written; free disk space"),
//! drops its cache and takes the next batch as usual. There is no retry loop and no
//! timer: each new write tries once, in its own batch's transaction, and the first
//! write after space returns simply commits. Reads never write to the disk and go on
//! throughout. Only the change is logged as an error ("the disk is full"), and its end
//! as info ("writes commit again").
//!
//! Why "nothing of it was written" holds wherever `ENOSPC` strikes:
//!
//! - **A statement.** An insert may spill pages of its transaction into the WAL before
//!   `COMMIT`, and large statements may use a temporary file. Spilled frames carry no
//!   commit mark; readers, later writers and recovery use frames only up to the last
//!   commit mark, so they are dead and the next transaction writes over them. After
//!   `SQLITE_FULL`, SQLite undoes the statement and may roll back the whole
//!   transaction by itself (SQLite's "Response To Errors Within A Transaction"); the
//!   writer rolls back whatever is still open, and SQLite's pager, which goes into its
//!   error state on a full disk, leaves it when that transaction ends and rereads the
//!   database on the next one.
//! - **`COMMIT`.** SQLite writes the transaction's frames in order, the frame with the
//!   commit mark last, and only then fsyncs. `ENOSPC` comes from a `write()`, so it
//!   strikes before the fsync and at the latest while the commit frame is written. A
//!   frame counts only when it is whole and its checksum, which chains over every frame
//!   before it in the WAL, matches: a commit frame cut short is no commit, and the bytes
//!   of an older WAL generation left behind it carry another salt. The WAL index (the
//!   `-shm` file) is updated only after the frames were written and synced, so no reader
//!   saw them; SQLite rolls the transaction back itself (the connection is out of its
//!   transaction when `COMMIT` returns the error), and the next transaction writes over
//!   the frames. The outcome is known: not written.
//! - **A checkpoint** (copying WAL frames into the database file, which may have to
//!   grow). SQLite marks frames as copied only after the database file's fsync
//!   succeeded, so a checkpoint that fails leaves the WAL as the record and the next
//!   checkpoint copies the frames again; the WAL never restarts over frames that were
//!   not copied. The failure is logged as a warning and nothing else changes. The
//!   background checkpointer runs only after commits, so a full disk does not make it
//!   spin. Closing the store while the disk is full fails its final checkpoint: close
//!   reports it, the WAL stays, and the next open reads it back.
//! - **The `-shm` file.** SQLite grows the WAL index in 32 KiB steps (one per 4,096 WAL
//!   frames or so) by writing to it, and reports a failure as `SQLITE_IOERR_SHMSIZE`,
//!   not `SQLITE_FULL`. During `COMMIT` the index grows after the frames were written
//!   and synced: the transaction is on the disk but not in the index, and the next
//!   transaction would write over it. That is a real "outcome unknown", so it fails
//!   stop (below), and reopening rebuilds the index from the WAL, transaction
//!   included. The writer restarts the WAL once it passes 8,192 frames (`RESTART_AT` in
//!   `writer.rs`), so the index reaches its working size (three steps) within the first
//!   8,192 frames after an open and rarely grows after that: only then can a full disk
//!   strike there.
//! - **Opening** (creating the database, its `-wal`, `-shm` and lock files, migrating
//!   the schema in one transaction, recovering the WAL). A failure is an
//!   [`crate::OpenError`] that names SQLite's error ("database or disk is full"); a
//!   migration is rolled back whole, and nothing was acknowledged.
//!
//! **The writer's cache** (each stream's last revision, the next global position, the
//! greatest stored id) holds the effects of the batch it was applying; like after any
//! failed batch it is dropped and reloaded from the database by the next batch. So the
//! refused events are never believed written: the next append gets the revisions and
//! positions the refused one would have got, and the global order stays gapless.
//!
//! A quota (`EDQUOT`) reaches SQLite as `SQLITE_IOERR_WRITE`, which cannot be told
//! apart from a failing disk, and fails stop.
//!
//! ## Fail-stop: after a failed `fsync`, nothing more is written
//!
//! Why not carry on, as after a full disk? Because a failed `fsync` does not leave the
//! data where the writer can try again. On Linux a failed writeback marks the dirty
//! pages clean and reports the error once: the data may be gone from the page cache
//! and from the disk, and the next `fsync` can succeed without writing it. A writer
//! that took the next batch would then acknowledge commits whose WAL frames sit behind
//! frames that never reached the disk (PostgreSQL stops with a PANIC for the same
//! reason, since 2018). Errors that say the file itself is unusable (I/O errors of any
//! kind, corrupt, not a database, cannot be opened) get the same treatment: every
//! further write could only make things worse. [`crate::error::is_disk_failure`] says
//! which SQLite errors those are.
//!
//! What happens, in order:
//!
//! 1. The batch that hit the error is rolled back (if its transaction is still open) and
//!    each of its requests is answered: [`BackendErrorKind::OutcomeUnknown`] if the
//!    error came from `COMMIT` (its WAL frames may or may not be on the disk, and the
//!    next open may find them), [`BackendErrorKind::Storage`] if it came before `COMMIT`
//!    (frames without a commit record are never recovered: nothing was written).
//! 2. The writer logs the failure as an error, with its cause (SQLite's message and
//!    extended code) and the stage it struck, records it here, stops the background
//!    checkpointer and turns off SQLite's checkpoint-on-close for its connection.
//! 3. Every later write (append, delete, tombstone, metadata, snapshot save) is answered
//!    with [`FailStop::refusal`], a [`BackendErrorKind::Storage`] error that says when
//!    and why the store stopped and what to do. Reads go on: they see every
//!    acknowledged write.
//! 4. Closing (or dropping) the store closes the connections and releases the lock
//!    **without checkpointing**. A checkpoint copies the WAL into the database file and
//!    then truncates the WAL; on a disk that just failed, it would replace the one record
//!    SQLite can verify (every WAL frame carries a checksum over the log before it) with
//!    writes nobody can check, and discard that record. Left alone, the WAL is read
//!    back on the next open: SQLite rebuilds its index from the file, keeping
//!    transactions up to the first frame whose checksum fails. So after the operator has
//!    checked the disk, reopening the store shows every acknowledged write, and the
//!    failed batch either whole or not at all.

use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat, Utc};
use foldstore_core::{BackendError, BackendErrorKind};

/// What to do, the same in every fail-stop message.
const REMEDY: &str = "Check the disk's health (the system log shows its errors), then reopen the store (restart the process); reopening recovers from the write-ahead log.";

/// The store's fail-stop state: empty until the first disk failure of a write.
#[derive(Debug, Default)]
pub(crate) struct FailStop {
    failure: OnceLock<Failure>,
}

#[derive(Debug)]
struct Failure {
    at: DateTime<Utc>,
    cause: String,
}

impl FailStop {
    /// Records a disk failure. Only the first counts: it is the one to report.
    pub(crate) fn trip(&self, cause: String) {
        let _ = self.failure.set(Failure {
            at: Utc::now(),
            cause,
        });
    }

    /// Whether the store has stopped writing.
    pub(crate) fn is_tripped(&self) -> bool {
        self.failure.get().is_some()
    }

    /// The error every write gets once the store stopped writing.
    pub(crate) fn refusal(&self) -> Option<BackendError> {
        self.failure.get().map(|f| {
            BackendError::new(
                BackendErrorKind::Storage,
                format!(
                    "the store stopped accepting writes after a disk error at {} ({}); nothing after it was written. {REMEDY}",
                    f.at.to_rfc3339_opts(SecondsFormat::Millis, true),
                    f.cause
                ),
            )
        })
    }
}

/// The answer of each request of the batch whose `COMMIT` failed on disk.
pub(crate) fn outcome_unknown(cause: &str, requests: usize) -> BackendError {
    BackendError::new(
        BackendErrorKind::OutcomeUnknown,
        format!(
            "the commit of this write failed with a disk error ({cause}): it may or may not be on the disk ({}), and the store stopped accepting writes. {REMEDY} Then read to see whether it was written, or retry an append with the same event ids (the retry is idempotent).",
            together(requests)
        ),
    )
}

/// The answer of each request of a batch that failed on disk before its `COMMIT`.
pub(crate) fn not_written(cause: &str, requests: usize) -> BackendError {
    BackendError::new(
        BackendErrorKind::Storage,
        format!(
            "a disk error ({cause}) failed this write before its commit: nothing of it was written ({}), and the store stopped accepting writes. {REMEDY}",
            together(requests)
        ),
    )
}

/// The answer of each request of a batch refused because the disk is full.
pub(crate) fn disk_full(cause: &str, requests: usize) -> BackendError {
    BackendError::new(
        BackendErrorKind::StorageFull,
        format!(
            "the disk is full ({cause}): nothing of this write was written ({}). Free space on the disk that holds the database; the store takes writes again by itself once there is room (no restart needed). Then retry (an append with the same event ids is idempotent). Reads keep working.",
            together(requests)
        ),
    )
}

fn together(requests: usize) -> String {
    match requests {
        0 | 1 => "it was committed alone".to_owned(),
        n => format!("the same holds for the {} writes committed with it", n - 1),
    }
}

/// A fault the crate's own tests inject into the next `COMMIT` (see
/// [`crate::writer::Shared::inject`]). Real `fsync` errors cannot be produced without
/// mounting a faulty device, so the hook fails the statement where it runs, with the
/// error SQLite reports for a failed `fsync`.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `COMMIT` is not run and fails with `SQLITE_IOERR_FSYNC`: the batch stays
    /// uncommitted (as when the frames never reached the disk).
    FailCommit,
    /// `COMMIT` runs, then reports `SQLITE_IOERR_FSYNC`: the batch is in the WAL (as
    /// when the frames reached the disk although the sync reported an error).
    FailAfterCommit,
    /// `COMMIT` is not run and fails with `SQLITE_FULL`, as when the disk filled up
    /// while its frames were written.
    DiskFull,
}

/// The error SQLite returns when `fsync` fails during a commit.
#[cfg(test)]
pub(crate) fn fsync_error() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
        Some("disk I/O error".to_owned()),
    )
}

/// The error SQLite returns when a write gets `ENOSPC`.
#[cfg(test)]
pub(crate) fn full_error() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
        Some("database or disk is full".to_owned()),
    )
}

#[cfg(test)]
mod tests {
    //! Fail-stop through the store's API, with a `COMMIT` made to fail as after a failed
    //! `fsync`. Guards against a writer that goes on committing (and acknowledging)
    //! after a disk error, against a close that checkpoints the WAL of a failed disk,
    //! and against a reopen that loses acknowledged writes or shows part of the failed
    //! batch.

    use foldstore_core::snapshot::{Snapshot, SnapshotError, SnapshotStore};
    use foldstore_core::{
        AppendError, DeleteError, EventStore, ExpectedRevision, MetadataError, NewEvent, Position,
        ReadAllOptions, ReadStreamOptions, StreamMetadata, StreamName,
    };
    use uuid::Uuid;

    use super::*;
    use crate::{SqliteOptions, SqliteStore};

    fn event(n: u32) -> NewEvent {
        NewEvent::json("Noted", &serde_json::json!({ "n": n })).unwrap()
    }

    fn kind_of_append(r: Result<foldstore_core::AppendResult, AppendError>) -> BackendError {
        match r {
            Err(AppendError::Backend(e)) => e,
            other => panic!("expected a backend error, got {other:?}"),
        }
    }

    fn assert_refusal(e: &BackendError) {
        assert_eq!(e.kind, BackendErrorKind::Storage, "{e}");
        assert!(!e.is_retryable());
        assert!(
            e.message
                .contains("stopped accepting writes after a disk error at")
                && e.message.contains("disk I/O error")
                && e.message.contains("reopen the store"),
            "{e}"
        );
    }

    /// A store in a new temporary directory, as the file `f.db`.
    async fn temp_store() -> (tempfile::TempDir, std::path::PathBuf, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        let store = SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap();
        (dir, path, store)
    }

    /// Every (stream, revision, id, position) of the file, in order.
    async fn log_of(store: &SqliteStore) -> Vec<(String, u64, Uuid, Position)> {
        store
            .read_all(ReadAllOptions::default())
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.stream.to_string(), e.revision, e.id, e.position))
            .collect()
    }

    /// Checks that `log` is `acknowledged` followed by all of `batch` or none of it, and
    /// says which.
    fn whole_or_nothing(
        log: &[(String, u64, Uuid, Position)],
        acknowledged: &[(String, u64, Uuid, Position)],
        batch: &[(String, u64, Uuid)],
    ) -> bool {
        assert_eq!(&log[..acknowledged.len()], acknowledged);
        let rest: Vec<_> = log[acknowledged.len()..]
            .iter()
            .map(|(s, r, id, _)| (s.clone(), *r, *id))
            .collect();
        assert!(
            rest.is_empty() || rest == batch,
            "part of a batch: {rest:?}"
        );
        !rest.is_empty()
    }

    async fn disk_error_at_commit(fault: Fault) {
        let (dir, path, store) = temp_store().await;
        let a = StreamName::new("a-1").unwrap();
        let b = StreamName::new("b-1").unwrap();
        for n in 0..3 {
            store
                .append(&a, ExpectedRevision::Any, vec![event(n)])
                .await
                .unwrap();
        }
        let acknowledged = log_of(&store).await;

        store.inner.shared.inject(fault);
        let failed = vec![event(10), event(11), event(12)];
        let e = kind_of_append(
            store
                .append(&b, ExpectedRevision::NoStream, failed.clone())
                .await,
        );
        assert_eq!(e.kind, BackendErrorKind::OutcomeUnknown, "{e}");
        assert!(
            e.message.contains("may or may not be on the disk")
                && e.message.contains("disk I/O error")
                && e.message.contains("same event ids"),
            "{e}"
        );

        // Every write is refused from now on, and says what to do; the store says so
        // before anyone tries (health checks ask it).
        match store.writable() {
            Err(e) => assert_refusal(&e),
            Ok(()) => panic!("a stopped store says it is writable"),
        }
        assert_refusal(&kind_of_append(
            store
                .append(&a, ExpectedRevision::Exact(2), vec![event(3)])
                .await,
        ));
        match store.delete_stream(&a, ExpectedRevision::Any).await {
            Err(DeleteError::Backend(e)) => assert_refusal(&e),
            other => panic!("{other:?}"),
        }
        match store.tombstone_stream(&a, ExpectedRevision::Any).await {
            Err(DeleteError::Backend(e)) => assert_refusal(&e),
            other => panic!("{other:?}"),
        }
        match store
            .set_stream_metadata(&a, StreamMetadata::default())
            .await
        {
            Err(MetadataError::Backend(e)) => assert_refusal(&e),
            other => panic!("{other:?}"),
        }
        match store
            .save_snapshot(Snapshot::new(a.clone(), "count", 1, 2, "3"))
            .await
        {
            Err(SnapshotError::Backend(e)) => assert_refusal(&e),
            other => panic!("{other:?}"),
        }

        // Reads go on and show what was acknowledged, and the failed append whole or
        // not at all. (A real failed `fsync` leaves SQLite's WAL index as it was, so
        // readers do not see the batch; the simulated one after `COMMIT` does not.)
        let whole: Vec<_> = failed
            .iter()
            .enumerate()
            .map(|(r, e)| ("b-1".to_owned(), r as u64, e.id))
            .collect();
        let present = fault == Fault::FailAfterCommit;
        assert_eq!(
            whole_or_nothing(&log_of(&store).await, &acknowledged, &whole),
            present
        );
        let stream = store
            .read_stream(&a, ReadStreamOptions::forwards())
            .await
            .unwrap();
        assert_eq!(stream.len(), 3);
        assert_eq!(store.head_position().await.unwrap(), Some(Position::new(3)));

        // Close works and leaves the WAL for recovery instead of checkpointing it.
        store.close().await.unwrap();
        let wal = std::fs::metadata(dir.path().join("f.db-wal")).unwrap();
        assert!(
            wal.len() > 0,
            "close checkpointed the WAL after a disk failure"
        );

        // Reopened: the acknowledged events, then the failed append whole or not at all
        // (here: depending on whether its commit record was written).
        let store = SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap();
        assert_eq!(
            whole_or_nothing(&log_of(&store).await, &acknowledged, &whole),
            present
        );
        // Writes work again, and retrying the failed append is safe either way.
        let retried = store
            .append(&b, ExpectedRevision::NoStream, failed)
            .await
            .unwrap();
        assert_eq!(retried.next_expected_revision, 2);
        assert_eq!(retried.position, Position::new(6));
        assert_eq!(log_of(&store).await.len(), 6);
        store.close().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_disk_error_at_commit_stops_writes_and_a_reopen_recovers_without_the_batch() {
        disk_error_at_commit(Fault::FailCommit).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_disk_error_reported_after_the_commit_record_was_written_recovers_the_whole_batch() {
        disk_error_at_commit(Fault::FailAfterCommit).await;
    }

    /// A full disk at `COMMIT` refuses the batch and nothing else: the store stays
    /// writable, the refused events are nowhere, and the next write (here the refused
    /// append retried with the same ids) commits at the positions the refused one would
    /// have had, without reopening.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_at_commit_refuses_the_batch_and_the_next_write_commits() {
        let (_dir, path, store) = temp_store().await;
        let a = StreamName::new("a-1").unwrap();
        let b = StreamName::new("b-1").unwrap();
        for n in 0..3 {
            store
                .append(&a, ExpectedRevision::Any, vec![event(n)])
                .await
                .unwrap();
        }
        let acknowledged = log_of(&store).await;

        store.inner.shared.inject(Fault::DiskFull);
        let refused = vec![event(10), event(11)];
        let e = kind_of_append(
            store
                .append(&b, ExpectedRevision::NoStream, refused.clone())
                .await,
        );
        assert_eq!(e.kind, BackendErrorKind::StorageFull, "{e}");
        assert!(
            e.message.contains("database or disk is full")
                && e.message.contains("nothing of this write was written")
                && e.message.contains("no restart needed"),
            "{e}"
        );
        assert!(!store.inner.shared.failstop.is_tripped());
        assert!(store.writable().is_ok(), "a full disk is no fail-stop");
        assert_eq!(
            log_of(&store).await,
            acknowledged,
            "a refused event is visible"
        );

        let retried = store
            .append(&b, ExpectedRevision::NoStream, refused.clone())
            .await
            .unwrap();
        assert_eq!(retried.next_expected_revision, 1);
        assert_eq!(retried.position, Position::new(5));
        store
            .set_stream_metadata(&a, StreamMetadata::default())
            .await
            .unwrap();
        store.close().await.unwrap();

        let store = SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap();
        let log = log_of(&store).await;
        assert_eq!(&log[..3], &acknowledged[..]);
        let ids: Vec<_> = log[3..]
            .iter()
            .map(|(s, r, id, _)| (s.as_str(), *r, *id))
            .collect();
        assert_eq!(
            ids,
            vec![("b-1", 0, refused[0].id), ("b-1", 1, refused[1].id)]
        );
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn dropping_a_stopped_store_releases_the_file_without_checkpointing() {
        let (dir, path, store) = temp_store().await;
        let a = StreamName::new("a-1").unwrap();
        store
            .append(&a, ExpectedRevision::Any, vec![event(0)])
            .await
            .unwrap();
        store.inner.shared.inject(Fault::FailCommit);
        let e = kind_of_append(
            store
                .append(&a, ExpectedRevision::Any, vec![event(1)])
                .await,
        );
        assert_eq!(e.kind, BackendErrorKind::OutcomeUnknown);
        drop(store);
        assert!(
            std::fs::metadata(dir.path().join("f.db-wal"))
                .unwrap()
                .len()
                > 0
        );
        let store = SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap();
        let events = store
            .read_stream(&a, ReadStreamOptions::forwards())
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        store.close().await.unwrap();
    }

    #[test]
    fn the_messages_say_what_happened_and_what_to_do() {
        let stop = FailStop::default();
        assert!(stop.refusal().is_none());
        stop.trip("disk I/O error".to_owned());
        stop.trip("a later error".to_owned());
        let refusal = stop.refusal().unwrap();
        assert!(refusal.message.contains("(disk I/O error)"), "{refusal}");
        assert!(refusal.message.contains("Check the disk's health"));
        let full = disk_full("database or disk is full", 2);
        assert_eq!(full.kind, BackendErrorKind::StorageFull);
        assert!(!full.is_retryable());
        assert!(
            full.message.contains("nothing of this write was written")
                && full.message.contains("Free space")
                && full.message.contains("no restart needed")
                && full.message.contains("the 1 writes committed with it"),
            "{full}"
        );
        let unknown = outcome_unknown("disk I/O error", 3);
        assert_eq!(unknown.kind, BackendErrorKind::OutcomeUnknown);
        assert!(unknown.message.contains("the 2 writes committed with it"));
        let nothing = not_written("database or disk is full", 1);
        assert_eq!(nothing.kind, BackendErrorKind::Storage);
        assert!(nothing.message.contains("nothing of it was written"));
    }
}
