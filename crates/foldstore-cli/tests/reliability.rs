//! The quick tier of the reliability scenarios (`crates/foldstore-reliability`,
//! docs/reliability.md), with small counts, against the `foldstore` binary this crate
//! builds: SIGKILL loops over HTTP on SQLite and PostgreSQL, SSE resume across kills,
//! and read-then-append counters on two servers over one PostgreSQL. Each test fails
//! with the scenario's full report when any of its checks does not hold. The other
//! scenarios (PostgreSQL faults on a private cluster, a full disk, stuck consumers, the
//! authorization walk, schema fuzzing) take longer or need more of the machine: they
//! run from `scripts/reliability.sh`, whose quick tier `.ci/run` calls.

use std::path::PathBuf;

use foldstore_postgres::testkit::test_url;
use foldstore_reliability::scenarios::{BackendKind, counters, kill_loop, sse_resume};
use foldstore_reliability::{Env, Report};

fn env(postgres_url: Option<String>) -> Env {
    Env {
        foldstore: PathBuf::from(env!("CARGO_BIN_EXE_foldstore")),
        postgres_url,
        scratch: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("reliability"),
    }
}

fn assert_held(report: Report) {
    assert!(report.ok(), "{}", report.render());
}

fn postgres(test: &str) -> Option<String> {
    test_url(test, "cargo test -p foldstore-cli --test reliability")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_on_sqlite_loses_doubles_and_tears_nothing() {
    let options = kill_loop::Options {
        backend: BackendKind::Sqlite,
        cycles: 10,
        writers: 4,
        max_run_ms: 300,
    };
    assert_held(kill_loop::run(&env(None), &options).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_on_postgres_loses_doubles_and_tears_nothing() {
    let Some(url) = postgres("sigkill_loop_on_postgres_loses_doubles_and_tears_nothing") else {
        return;
    };
    let options = kill_loop::Options {
        backend: BackendKind::Postgres,
        cycles: 10,
        writers: 4,
        max_run_ms: 300,
    };
    assert_held(kill_loop::run(&env(Some(url)), &options).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_subscribers_resume_across_kills_without_gaps_or_duplicates() {
    let options = sse_resume::Options {
        backend: BackendKind::Sqlite,
        kills: 3,
        writers: 4,
        subscribers: 4,
    };
    assert_held(sse_resume::run(&env(None), &options).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_on_two_servers_over_one_postgres_lose_no_update() {
    let Some(url) = postgres("counters_on_two_servers_over_one_postgres_lose_no_update") else {
        return;
    };
    let options = counters::Options {
        backend: BackendKind::Postgres,
        writers: 32,
        servers: 2,
        counters: 4,
        increments: 5,
    };
    assert_held(counters::run(&env(Some(url)), &options).await.unwrap());
}
