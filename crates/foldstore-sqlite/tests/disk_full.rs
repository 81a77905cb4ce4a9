//! A real full disk under the SQLite store: a 16 MiB tmpfs in a private mount namespace
//! (see `support/private_tmpfs.rs`; skipped without root unless
//! `FOLDSTORE_REQUIRE_PRIVILEGED=1`).
//!
//! Guards against a store that treats `ENOSPC` like a failed `fsync` (answering
//! "outcome unknown", then refusing every write until a restart), against one that
//! acknowledges or shows part of a write the full disk refused, and against one that
//! loses or duplicates acknowledged writes on the way. Four writers append until the
//! disk is full; then: every refusal is `StorageFull`, reads work and show exactly the
//! acknowledged events, space is freed (a filler file written first is deleted),
//! writes (the refused appends retried, then new ones) commit without reopening the
//! store, and after a reopen the oracle holds: every acknowledged event exactly once at
//! the position and revision its acknowledgement gave, with its bytes; no refused and
//! never retried event; positions and revisions gapless; `PRAGMA integrity_check` ok.
//! Finally the disk is filled again and the store closed and reopened while it is
//! still full (an operator restarting before freeing space): the same oracle holds.

#[path = "support/private_tmpfs.rs"]
mod private_tmpfs;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use foldstore_core::{
    AppendError, BackendErrorKind, EventStore, ExpectedRevision, NewEvent, Position,
    ReadAllOptions, ReadStreamOptions, StreamName,
};
use foldstore_sqlite::{SqliteOptions, SqliteStore};
use uuid::Uuid;

/// What the oracle expects of one acknowledged event.
#[derive(Debug, Clone, PartialEq)]
struct Acked {
    stream: String,
    revision: u64,
    position: Position,
    data: Vec<u8>,
}

/// What every writer saw.
#[derive(Default)]
struct Record {
    acked: HashMap<Uuid, Acked>,
    /// Refused appends, whole: (stream, events).
    refused: Vec<(StreamName, Vec<NewEvent>)>,
}

/// An event of about 3 KiB, unique by writer and sequence number.
fn event(writer: usize, seq: usize, pad: usize) -> NewEvent {
    NewEvent::json(
        "Filled",
        &serde_json::json!({ "writer": writer, "seq": seq, "pad": "x".repeat(pad) }),
    )
    .unwrap()
}

/// Appends `events` and records the outcome; panics on anything but an acknowledgement
/// or a full disk.
async fn append_and_record(
    store: &SqliteStore,
    record: &Mutex<Record>,
    stream: &StreamName,
    events: Vec<NewEvent>,
) -> bool {
    match store
        .append(stream, ExpectedRevision::Any, events.clone())
        .await
    {
        Ok(r) => {
            let last = r.position.as_u128();
            let n = events.len() as u128;
            let mut record = record.lock().unwrap();
            for (i, e) in events.iter().enumerate() {
                let acked = Acked {
                    stream: stream.to_string(),
                    revision: r.next_expected_revision + 1 + i as u64 - events.len() as u64,
                    position: Position::new(last + 1 + i as u128 - n),
                    data: e.data.to_vec(),
                };
                assert!(record.acked.insert(e.id, acked).is_none());
            }
            true
        }
        Err(AppendError::Backend(e)) if e.kind == BackendErrorKind::StorageFull => {
            assert!(
                e.message.contains("nothing of this write was written")
                    && e.message.contains("Free space"),
                "{e}"
            );
            record
                .lock()
                .unwrap()
                .refused
                .push((stream.clone(), events));
            false
        }
        Err(other) => panic!("a full disk must answer StorageFull, got: {other}"),
    }
}

/// Checks the store against the record: every acknowledged event once, where its
/// acknowledgement put it, with its bytes; nothing else (in particular none of
/// `absent`); positions and per-stream revisions gapless.
async fn check(store: &SqliteStore, acked: &HashMap<Uuid, Acked>, absent: &[Uuid]) {
    let all = store.read_all(ReadAllOptions::forwards()).await.unwrap();
    let mut seen = HashMap::new();
    let mut next_revision: HashMap<String, u64> = HashMap::new();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, Position::new(i as u128 + 1), "a gap in $all");
        let revision = next_revision.entry(e.stream.to_string()).or_default();
        assert_eq!(e.revision, *revision, "a gap in {}", e.stream);
        *revision += 1;
        assert!(seen.insert(e.id, ()).is_none(), "{} twice", e.id);
        let expected = acked
            .get(&e.id)
            .unwrap_or_else(|| panic!("event {} at {:?} was never acknowledged", e.id, e.position));
        assert_eq!(
            expected,
            &Acked {
                stream: e.stream.to_string(),
                revision: e.revision,
                position: e.position,
                data: e.data.to_vec(),
            }
        );
    }
    assert_eq!(seen.len(), acked.len(), "acknowledged events are missing");
    for id in absent {
        assert!(!seen.contains_key(id), "refused event {id} is stored");
    }
}

/// The acknowledged events so far.
fn acked(record: &Mutex<Record>) -> HashMap<Uuid, Acked> {
    record.lock().unwrap().acked.clone()
}

fn integrity_check(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(result, "ok");
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_resumes_without_a_reopen() {
    let Some(dir) = private_tmpfs::enter(
        "a_full_disk_refuses_writes_keeps_reads_and_resumes_without_a_reopen",
        "16m",
    ) else {
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(fill_refuse_free_resume(&dir));
}

async fn fill_refuse_free_resume(dir: &Path) {
    // Room to free later: 10 MiB of the 16, more than the WAL can grow to in the 6
    // left, so that the checkpoint on close, which copies the WAL into the database
    // file, has room too. (With less room it fails, and close says so; the WAL stays
    // for the next open, see `failstop`.)
    let filler = dir.join("filler");
    std::fs::write(&filler, vec![0xa5_u8; 10 << 20]).unwrap();
    let path = dir.join("store.db");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let record = Arc::new(Mutex::new(Record::default()));

    // Four writers append batches of 1-4 events of ~3 KiB until each was refused three
    // times; a batch that fits the space left may still commit after a refusal.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (store, record) = (store.clone(), Arc::clone(&record));
            tokio::spawn(async move {
                let mut refusals = 0;
                for seq in 0..20_000 {
                    let stream = StreamName::new(format!("w{w}-{}", seq % 7)).unwrap();
                    let events = (0..1 + seq % 4)
                        .map(|k| event(w, seq * 4 + k, 3_000))
                        .collect();
                    if !append_and_record(&store, &record, &stream, events).await {
                        refusals += 1;
                        if refusals == 3 {
                            return;
                        }
                    }
                }
                panic!("writer {w}: 20,000 appends and the disk never filled");
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }

    // Full: a large append is refused whole; the store still says it is writable (a
    // full disk is no fail-stop), and reads work and show exactly what was
    // acknowledged.
    let big_stream = StreamName::new("big-1").unwrap();
    let big: Vec<_> = (0..256).map(|k| event(9, k, 4_000)).collect();
    assert!(!append_and_record(&store, &record, &big_stream, big.clone()).await);
    assert!(store.writable().is_ok());
    let refused_ids: Vec<Uuid> = {
        let record = record.lock().unwrap();
        assert!(record.refused.len() >= 13);
        assert!(
            record.acked.len() > 300,
            "{} acknowledged",
            record.acked.len()
        );
        record
            .refused
            .iter()
            .flat_map(|(_, events)| events.iter().map(|e| e.id))
            .collect()
    };
    check(&store, &acked(&record), &refused_ids).await;
    {
        let record = record.lock().unwrap();
        eprintln!(
            "disk full after {} acknowledged events; {} appends refused",
            record.acked.len(),
            record.refused.len()
        );
    }
    let one = store
        .read_stream(
            &StreamName::new("w0-0").unwrap(),
            ReadStreamOptions::forwards(),
        )
        .await
        .unwrap();
    assert!(!one.is_empty());
    let head = store.head_position().await.unwrap().unwrap();
    assert_eq!(
        head.as_u128(),
        record.lock().unwrap().acked.len() as u128,
        "the head"
    );

    // Space returns; without a reopen, the refused appends (but the big one) commit
    // when retried with the same ids, and new appends commit.
    std::fs::remove_file(&filler).unwrap();
    let retries: Vec<_> = {
        let mut record = record.lock().unwrap();
        let big = record.refused.pop().unwrap();
        assert_eq!(big.0, big_stream);
        std::mem::take(&mut record.refused)
    };
    for (stream, events) in retries {
        assert!(
            append_and_record(&store, &record, &stream, events).await,
            "a retry was refused after space returned"
        );
    }
    for seq in 0..50 {
        let stream = StreamName::new(format!("after-{}", seq % 3)).unwrap();
        assert!(
            append_and_record(&store, &record, &stream, vec![event(8, seq, 3_000)]).await,
            "an append was refused after space returned"
        );
    }
    let big_ids: Vec<Uuid> = big.iter().map(|e| e.id).collect();
    check(&store, &acked(&record), &big_ids).await;
    store.close().await.unwrap();

    // Reopened: the same, and SQLite finds the file sound.
    integrity_check(&path);
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    check(&store, &acked(&record), &big_ids).await;

    // Filled again, then closed and reopened while still full (an operator restarting
    // before freeing space): close may fail to checkpoint, but says why, the WAL
    // stays, and the reopened store has every acknowledged event.
    let mut refusals = 0;
    for seq in 0..20_000 {
        let stream = StreamName::new(format!("again-{}", seq % 5)).unwrap();
        if !append_and_record(&store, &record, &stream, vec![event(7, seq, 3_000)]).await {
            refusals += 1;
            if refusals == 3 {
                break;
            }
        }
    }
    assert_eq!(refusals, 3, "the disk never filled again");
    let refused_again: Vec<Uuid> = record
        .lock()
        .unwrap()
        .refused
        .iter()
        .flat_map(|(_, events)| events.iter().map(|e| e.id))
        .chain(big_ids)
        .collect();
    if let Err(e) = store.close().await {
        let message = e.to_string();
        assert!(message.contains("database or disk is full"), "{message}");
        eprintln!("closing on a full disk: {message}");
    }
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    check(&store, &acked(&record), &refused_again).await;
    let _ = store.close().await;
    integrity_check(&path);
}
