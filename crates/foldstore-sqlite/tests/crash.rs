//! Crash test (guarantees G1 and G2): acknowledged appends survive `kill -9`, and no
//! part of an unacknowledged append is ever visible.
//!
//! It guards against a writer that acknowledges before its commit is done (an answer
//! sent before `COMMIT` returned, results taken from a cache the database disagrees
//! with), against torn group commits (part of a batch, or part of one append, surviving),
//! and against recovery that loses or reorders committed transactions. A kill does not
//! simulate power loss: that the default really syncs (`synchronous=FULL`) is checked by
//! `tests/store.rs::default_durability_is_full_and_normal_is_opt_in`.
//!
//! The test re-executes its own binary as a child (selected by the `FOLDSTORE_CRASH_CHILD`
//! environment variable). The child opens the store and runs several concurrent tasks
//! that append batches of 1 to 10 events with unique ids, printing each acknowledged
//! append (append id, stream, revision, position, event ids) to stdout and flushing. The
//! parent kills the child with SIGKILL 100 times, at a random moment (every other time
//! anywhere from its start, including open and WAL recovery; otherwise once appends are
//! being acknowledged), and after each kill checks the reopened database against
//! everything acknowledged so far: every acknowledged event is there with the
//! acknowledged revision and position, revisions are gapless per stream, positions
//! strictly increase, every append is whole (its events are adjacent, complete and in
//! order, acknowledged or not), and `PRAGMA integrity_check` says `ok`. Every tenth kill
//! starts a fresh file, so each check stays small.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use foldstore_core::testkit::child::ChildTest;
use foldstore_core::{EventStore, ExpectedRevision, NewEvent, ReadAllOptions, StreamName};
use foldstore_sqlite::{SqliteOptions, SqliteStore};
use uuid::Uuid;

const CHILD_ENV: &str = "FOLDSTORE_CRASH_CHILD";
const TEST_NAME: &str = "acknowledged_appends_survive_sigkill";
const KILLS: usize = 100;
const KILLS_PER_FILE: usize = 10;
const TASKS: usize = 8;
const STREAMS: u64 = 16;

/// A small xorshift generator: the test needs no reproducible sequence, only spread.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One acknowledged append as the child printed it.
#[derive(Debug, Clone)]
struct Ack {
    stream: String,
    revision: u64,
    position: u128,
    ids: Vec<Uuid>,
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        run_child(&path);
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut rng = Rng::seeded();
    let mut acked: HashMap<Uuid, Ack> = HashMap::new();
    let mut path = dir.path().join("crash-0.db");
    let mut total_acks = 0;
    let mut kills_with_acks = 0;
    for kill in 0..KILLS {
        if kill % KILLS_PER_FILE == 0 {
            path = dir.path().join(format!("crash-{kill}.db"));
            acked.clear();
        }
        let child = ChildTest::spawn(TEST_NAME, &[(CHILD_ENV, &path)], "ack ");
        if kill % 2 == 0 {
            // Anywhere from the start: during process start, open and WAL recovery too.
            std::thread::sleep(Duration::from_millis(5 + rng.below(150)));
        } else {
            // While appends are certainly flowing.
            let _ = child.wait_for_marker(Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(rng.below(60)));
        }
        let text = child.kill();
        // Only whole lines: the kill may cut the last one.
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        let before = acked.len();
        for line in complete.lines().filter(|l| l.starts_with("ack ")) {
            let (append, ack) = parse_ack(line);
            acked.insert(append, ack);
        }
        total_acks += acked.len() - before;
        if acked.len() > before {
            kills_with_acks += 1;
        }
        runtime.block_on(check(&path, &acked, kill));
    }
    assert!(
        total_acks > 500 && kills_with_acks >= KILLS / 2,
        "the children acknowledged too little to test anything: {total_acks} appends, \
         {kills_with_acks} kills with acknowledgements"
    );
    eprintln!(
        "crash test: {KILLS} kills, {total_acks} acknowledged appends, {:?}",
        started.elapsed()
    );
}

fn parse_ack(line: &str) -> (Uuid, Ack) {
    let mut parts = line.split(' ').skip(1);
    let mut next = || parts.next().expect("a complete ack line");
    let append = next().parse().expect("append id");
    let stream = next().to_owned();
    let revision = next().parse().expect("revision");
    let position = next().parse().expect("position");
    let ids = next()
        .split(',')
        .map(|s| s.parse().expect("event id"))
        .collect();
    (
        append,
        Ack {
            stream,
            revision,
            position,
            ids,
        },
    )
}

/// What each event's data says about the append it belongs to.
struct Tag {
    append: Uuid,
    n: usize,
    i: usize,
}

fn tag_of(e: &foldstore_core::RecordedEvent) -> Tag {
    let v: serde_json::Value = e.json().expect("the child's tag");
    Tag {
        append: v["append"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("append id"),
        n: v["n"].as_u64().expect("n") as usize,
        i: v["i"].as_u64().expect("i") as usize,
    }
}

async fn check(path: &std::path::Path, acked: &HashMap<Uuid, Ack>, kill: usize) {
    // The store opens the killed file itself (WAL recovery included).
    let store = SqliteStore::open(path, SqliteOptions::default())
        .await
        .unwrap_or_else(|e| panic!("reopen after kill {kill}: {e}"));
    let all = store
        .read_all(ReadAllOptions::forwards())
        .await
        .expect("read $all");
    let mut next_revision: HashMap<&str, u64> = HashMap::new();
    // append id -> indexes into `all`
    let mut appends: HashMap<Uuid, Vec<usize>> = HashMap::new();
    for (index, e) in all.iter().enumerate() {
        if index > 0 {
            assert!(
                all[index - 1].position < e.position,
                "positions must strictly increase (kill {kill})"
            );
        }
        let expected = next_revision.entry(e.stream.as_str()).or_insert(0);
        assert_eq!(
            e.revision, *expected,
            "revisions of {} must be gapless (kill {kill})",
            e.stream
        );
        *expected += 1;
        let tag = tag_of(e);
        appends.entry(tag.append).or_default().push(index);
    }
    for (append, indexes) in &appends {
        let first = tag_of(&all[indexes[0]]);
        assert_eq!(
            indexes.len(),
            first.n,
            "append {append} is torn: {} of {} events visible (kill {kill})",
            indexes.len(),
            first.n
        );
        for (k, &index) in indexes.iter().enumerate() {
            let tag = tag_of(&all[index]);
            assert_eq!(tag.i, k, "append {append} out of order (kill {kill})");
            assert_eq!(
                index,
                indexes[0] + k,
                "append {append} is not contiguous (kill {kill})"
            );
        }
    }
    for (append, ack) in acked {
        let indexes = appends.get(append).unwrap_or_else(|| {
            panic!("acknowledged append {append} ({ack:?}) is missing after kill {kill}")
        });
        let events: Vec<_> = indexes.iter().map(|&i| &all[i]).collect();
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        assert_eq!(ids, ack.ids, "append {append}: ids (kill {kill})");
        let last = events.last().expect("a non-empty append");
        assert_eq!(last.stream.as_str(), ack.stream, "append {append}: stream");
        assert_eq!(last.revision, ack.revision, "append {append}: revision");
        assert_eq!(
            last.position.as_u128(),
            ack.position,
            "append {append}: position"
        );
    }
    {
        // Read-only, beside the open store, so that this connection does not checkpoint.
        let conn =
            rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open with plain SQLite");
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(integrity, "ok", "after kill {kill}");
    }
    store.close().await.expect("close");
}

/// The child: appends until it is killed, printing every acknowledgement.
fn run_child(path: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = SqliteStore::open(path, SqliteOptions::default())
            .await
            .expect("child: open");
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(Rng::seeded().0 ^ ((t as u64 + 1) << 32) | 1);
                loop {
                    let stream =
                        StreamName::new(format!("crash-{}", rng.below(STREAMS))).expect("name");
                    let n = 1 + rng.below(10) as usize;
                    let append = Uuid::new_v4();
                    let events: Vec<NewEvent> = (0..n)
                        .map(|i| {
                            let tag = serde_json::json!({ "append": append, "n": n, "i": i });
                            NewEvent::json("Crashed", &tag).expect("json")
                        })
                        .collect();
                    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
                    let result = store
                        .append(&stream, ExpectedRevision::Any, events)
                        .await
                        .expect("child: append");
                    let mut out = std::io::stdout().lock();
                    writeln!(
                        out,
                        "ack {append} {stream} {} {} {}",
                        result.next_expected_revision,
                        result.position,
                        ids.join(",")
                    )
                    .expect("child: print");
                    out.flush().expect("child: flush");
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}
