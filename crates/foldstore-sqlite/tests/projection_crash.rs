//! Kill test for exactly-once SQLite read models (issue 5).
//!
//! Guards against a read model and its checkpoint that can disagree after a crash: a
//! checkpoint committed apart from (before or after) the batch it covers makes a
//! restarted runner skip events or apply them twice. It also checks that a killed
//! runner's projection lock is released by the OS, so the next runner can take it.
//!
//! The test re-executes its own binary as a child (selected by the
//! `FOLDSTORE_PROJECTION_CHILD` environment variable) that runs a projection over a
//! SQLite event store into a SQLite read model, in batches of 25. Before each child
//! starts, the parent appends 300 more events; it kills the child with SIGKILL at a
//! random moment after the child took the lock, 40 times. After each kill the read
//! model must equal the fold of exactly the events up to its checkpoint (per-stream
//! counts and sums), with every event applied once. At the end a runner catches up and
//! the read model must equal a rebuild from zero in a fresh database.

mod projection_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldstore_core::projection::{ProjectionRunner, ProjectionTarget, StopSignal};
use foldstore_core::testkit::child::ChildTest;
use foldstore_core::{
    EventStore, ExpectedRevision, NewEvent, Position, ReadAllOptions, StreamName,
};
use foldstore_sqlite::projection::SqliteReadModel;
use foldstore_sqlite::{SqliteOptions, SqliteStore};
use projection_support::{Totals, applied, fold, totals};

const CHILD_ENV: &str = "FOLDSTORE_PROJECTION_CHILD";
const TEST_NAME: &str = "read_model_equals_a_rebuild_after_every_sigkill";
const KILLS: usize = 40;
const EVENTS_PER_ROUND: usize = 300;
const BATCH: usize = 25;

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1
}

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn read_model_equals_a_rebuild_after_every_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        run_child(Path::new(&dir));
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut rng = seed();
    let mut mid_way = 0;
    for kill in 0..KILLS {
        runtime.block_on(append_round(dir.path(), &mut rng));
        let child = ChildTest::spawn(TEST_NAME, &[(CHILD_ENV, dir.path())], "locked");
        assert!(
            child.wait_for_marker(Duration::from_secs(20)),
            "child {kill} never took the projection lock"
        );
        std::thread::sleep(Duration::from_micros(next(&mut rng) % 40_000));
        child.kill();
        let (checkpoint, head) = runtime.block_on(check(dir.path(), kill));
        if checkpoint.is_some() && checkpoint < head {
            mid_way += 1;
        }
    }
    assert!(
        mid_way >= KILLS / 8,
        "only {mid_way} of {KILLS} kills hit a runner with work left: the test is not testing kills mid-stream"
    );
    runtime.block_on(finish(dir.path()));
    eprintln!(
        "projection crash test: {KILLS} kills, {mid_way} mid-stream, {:?}",
        started.elapsed()
    );
}

async fn append_round(dir: &Path, rng: &mut u64) {
    let store = SqliteStore::open(dir.join("events.db"), SqliteOptions::default())
        .await
        .expect("open the event store");
    for _ in 0..EVENTS_PER_ROUND / 10 {
        let stream = StreamName::new(format!("account-{}", next(rng) % 16)).unwrap();
        let events = (0..10)
            .map(|_| {
                let amount = (next(rng) % 1000) as i64 - 500;
                NewEvent::json("Deposited", &serde_json::json!({ "amount": amount })).unwrap()
            })
            .collect();
        store
            .append(&stream, ExpectedRevision::Any, events)
            .await
            .expect("append");
    }
    store.close().await.expect("close the event store");
}

/// The read model must hold exactly the events up to its checkpoint, each once.
/// Returns the checkpoint and the store's head.
async fn check(dir: &Path, kill: usize) -> (Option<Position>, Option<Position>) {
    let store = SqliteStore::open(dir.join("events.db"), SqliteOptions::default())
        .await
        .expect("open the event store");
    let all = store
        .read_all(ReadAllOptions::forwards())
        .await
        .expect("read $all");
    let head = store.head_position().await.expect("head");
    store.close().await.expect("close");
    let conn = rusqlite::Connection::open(dir.join("read.db")).expect("open the read model");
    let checkpoint: Option<Position> = conn
        .query_row(
            "SELECT position FROM foldstore_checkpoints WHERE name = 'totals'",
            [],
            |r| r.get::<_, String>(0),
        )
        .ok()
        .map(|p| p.parse().expect("a position"));
    let covered: Vec<_> = all
        .iter()
        .filter(|e| Some(e.position) <= checkpoint)
        .cloned()
        .collect();
    assert_eq!(
        totals(&conn),
        fold(&covered),
        "after kill {kill}: the read model is not the fold of the events up to its checkpoint {checkpoint:?}"
    );
    let applied = applied(&conn);
    assert_eq!(
        applied.len(),
        covered.len(),
        "after kill {kill}: applied events"
    );
    assert!(
        applied.values().all(|&n| n == 1),
        "after kill {kill}: an event was applied twice"
    );
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok", "after kill {kill}");
    (checkpoint, head)
}

/// Catches up, then compares with a rebuild from zero in a fresh database.
async fn finish(dir: &Path) {
    let store = Arc::new(
        SqliteStore::open(dir.join("events.db"), SqliteOptions::default())
            .await
            .expect("open the event store"),
    );
    let model = SqliteReadModel::open(dir.join("read.db"), "totals", Totals).unwrap();
    let mut runner = ProjectionRunner::new(store.clone(), model).batch_size(BATCH);
    runner.catch_up().await.expect("catch up");
    let rebuilt = SqliteReadModel::open(dir.join("rebuilt.db"), "totals", Totals).unwrap();
    let mut rebuild = ProjectionRunner::new(store.clone(), rebuilt).batch_size(1000);
    rebuild.rebuild().await.expect("rebuild");
    let caught_up = runner.target().with_connection(totals);
    let from_zero = rebuild.target().with_connection(totals);
    assert_eq!(
        caught_up, from_zero,
        "the caught-up read model differs from a rebuild"
    );
    assert_eq!(
        from_zero.values().map(|v| v.0).sum::<i64>() as usize,
        KILLS * EVENTS_PER_ROUND
    );
}

/// The child: runs the projection until it is killed.
fn run_child(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = SqliteStore::open(dir.join("events.db"), SqliteOptions::default())
            .await
            .expect("child: open the event store");
        let mut model = SqliteReadModel::open(dir.join("read.db"), "totals", Totals)
            .expect("child: open the read model");
        // The killed predecessor's lock must be free: the OS released it.
        assert!(
            model.try_acquire().await.expect("child: lock"),
            "child: the projection lock is still held after the previous child died"
        );
        println!("locked");
        let mut runner = ProjectionRunner::new(Arc::new(store), model).batch_size(BATCH);
        runner.run(StopSignal::never()).await.expect("child: run");
    });
}
