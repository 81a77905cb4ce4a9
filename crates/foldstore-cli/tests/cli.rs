//! Runs the built `foldstore` binary in a temporary directory, as a user would.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A scratch directory on the same disk as the build (not `/tmp`, which may be tmpfs:
/// the bench refuses to run there).
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn foldstore(dir: &Path, args: &[&str]) -> Output {
    foldstore_with_stdin(dir, args, None)
}

fn foldstore_with_stdin(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    foldstore_with_env(dir, args, stdin, None)
}

/// Runs `foldstore args` in `dir`, with `database_url` as `FOLDSTORE_DATABASE_URL`.
fn foldstore_with_env(
    dir: &Path,
    args: &[&str],
    stdin: Option<&str>,
    database_url: Option<&str>,
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_foldstore"));
    command
        .env_remove("FOLDSTORE_DATA_DIR")
        .env_remove("FOLDSTORE_DATABASE_URL");
    if let Some(url) = database_url {
        command.env("FOLDSTORE_DATABASE_URL", url);
    }
    let mut child = command
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// The report of a `bench --json` run that succeeded: the last line it printed.
fn report_of(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_str(stdout(o).lines().last().unwrap()).unwrap()
}

/// A bench run removed the fresh directory it made in `dir`.
fn assert_nothing_left(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The fresh schema a PostgreSQL bench run names on stderr.
fn bench_schema_of(o: &Output) -> String {
    let err = stderr(o);
    err.split_whitespace()
        .find(|w| w.starts_with("foldstore_bench_"))
        .unwrap_or_else(|| panic!("no bench schema named in {err}"))
        .to_owned()
}

/// A same-run baseline of the same rows raw into the store's schema
/// (`raw_schema_<tag>_per_sec`: `tx100` for append-batch, `tx1` for append-1 on
/// SQLite) is in the report, with its ratio.
fn assert_schema_baseline(report: &Value, tag: &str) {
    let raw = report[format!("raw_schema_{tag}_per_sec")]
        .as_f64()
        .unwrap();
    let ratio = report[format!("ratio_vs_raw_schema_{tag}")]
        .as_f64()
        .unwrap();
    let rate = report["events_per_sec"].as_f64().unwrap();
    assert!(raw > 0.0 && (rate / raw - ratio).abs() < 0.01, "{report}");
}

#[test]
fn append_then_read_round_trip() {
    let dir = scratch();
    let d = dir.path();
    let first = foldstore(
        d,
        &[
            "append",
            "account-1",
            "--type",
            "Opened",
            "--data",
            r#"{"owner": "ada"}"#,
            "--expected-revision",
            "no_stream",
            "--metadata",
            r#"{"tenant":"acme"}"#,
        ],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let result = &json_lines(&first)[0];
    assert_eq!(result["next_expected_revision"], 0);
    assert!(result["position"].is_string());

    let id = "0190f0b0-0000-7000-8000-000000000001";
    let second = foldstore_with_stdin(
        d,
        &[
            "append",
            "account-1",
            "--type",
            "Deposited",
            "--expected-revision",
            "0",
            "--id",
            id,
        ],
        Some("{\n  \"amount\": 10\n}\n"),
    );
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(json_lines(&second)[0]["next_expected_revision"], 1);

    let binary = foldstore(
        d,
        &[
            "append",
            "blob-1",
            "--type",
            "Uploaded",
            "--content-type",
            "application/octet-stream",
            "--data",
            "foo",
        ],
    );
    assert!(binary.status.success(), "{}", stderr(&binary));

    let read = foldstore(d, &["read", "account-1"]);
    assert!(read.status.success(), "{}", stderr(&read));
    let events = json_lines(&read);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["type"], "Opened");
    assert_eq!(events[0]["revision"], 0);
    assert_eq!(events[0]["data"]["owner"], "ada");
    assert_eq!(events[0]["metadata"]["tenant"], "acme");
    assert_eq!(events[1]["type"], "Deposited");
    assert_eq!(events[1]["id"], id);
    assert_eq!(events[1]["data"]["amount"], 10);

    let backwards = foldstore(d, &["read", "account-1", "--backwards", "--limit", "1"]);
    let events = json_lines(&backwards);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["revision"], 1);

    let all = foldstore(d, &["read", "$all"]);
    assert!(all.status.success(), "{}", stderr(&all));
    let events = json_lines(&all);
    assert_eq!(events.len(), 3);
    assert_eq!(events[2]["data_base64"], "Zm9v");
    assert_eq!(events[2]["data_bytes"], 3);

    let category = foldstore(d, &["read", "$all", "--category", "blob"]);
    assert_eq!(json_lines(&category).len(), 1);
    let typed = foldstore(d, &["read", "$all", "--type", "Deposited"]);
    assert_eq!(json_lines(&typed).len(), 1);

    // The same directory through --database.
    let db = d.join("foldstore-data").join("foldstore.db");
    let url = format!("sqlite://{}", db.display());
    let via_url = foldstore(d, &["--database", &url, "read", "account-1"]);
    assert!(via_url.status.success(), "{}", stderr(&via_url));
    assert_eq!(json_lines(&via_url).len(), 2);

    // A second writer expecting an empty stream loses, with the typed message.
    let late = foldstore(
        d,
        &[
            "append",
            "account-1",
            "--type",
            "Opened",
            "--data",
            "{}",
            "--expected-revision",
            "no_stream",
        ],
    );
    assert_eq!(late.status.code(), Some(1));
    assert!(
        stderr(&late).contains("is at revision 1, not at the expected no stream"),
        "{}",
        stderr(&late)
    );
}

#[test]
fn wrong_expected_revision_fails_with_the_typed_message() {
    let dir = scratch();
    let out = foldstore(
        dir.path(),
        &[
            "append",
            "order-9",
            "--type",
            "Placed",
            "--data",
            "{}",
            "--expected-revision",
            "5",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("stream order-9 is at no stream, not at the expected revision 5"),
        "{err}"
    );
    assert!(err.contains("read it again"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn read_errors_exit_non_zero() {
    let dir = scratch();
    let d = dir.path();
    let missing_db = foldstore(d, &["read", "account-1"]);
    assert_eq!(missing_db.status.code(), Some(1));
    assert!(
        stderr(&missing_db).contains("there is no database"),
        "{}",
        stderr(&missing_db)
    );

    let ok = foldstore(
        d,
        &["append", "account-1", "--type", "Opened", "--data", "{}"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let missing_stream = foldstore(d, &["read", "account-2"]);
    assert_eq!(missing_stream.status.code(), Some(1));
    assert!(
        stderr(&missing_stream).contains("stream account-2 does not exist"),
        "{}",
        stderr(&missing_stream)
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = scratch();
    let d = dir.path();
    let serve = foldstore(d, &["serve", "--bind", "0.0.0.0", "--port", "0"]);
    assert_eq!(serve.status.code(), Some(2));
    assert!(stderr(&serve).contains("--insecure"), "{}", stderr(&serve));

    let schema_on_sqlite = foldstore(
        d,
        &[
            "--pg-schema",
            "s1",
            "append",
            "a-1",
            "--type",
            "T",
            "--data",
            "{}",
        ],
    );
    assert_eq!(schema_on_sqlite.status.code(), Some(2));
    assert!(
        stderr(&schema_on_sqlite).contains("--pg-schema is for PostgreSQL databases"),
        "{}",
        stderr(&schema_on_sqlite)
    );

    let pool_on_sqlite = foldstore(d, &["--pg-pool-size", "8", "read", "$all"]);
    assert_eq!(pool_on_sqlite.status.code(), Some(2));
    assert!(
        stderr(&pool_on_sqlite)
            .contains("--pg-pool-size and --pg-statement-timeout-ms are for PostgreSQL"),
        "{}",
        stderr(&pool_on_sqlite)
    );
    let tiny_pool = foldstore(d, &["--pg-pool-size", "1", "read", "$all"]);
    assert_eq!(tiny_pool.status.code(), Some(2));
    assert!(
        stderr(&tiny_pool).contains("--pg-pool-size"),
        "{}",
        stderr(&tiny_pool)
    );

    let bad_revision = foldstore(
        d,
        &[
            "append",
            "a-1",
            "--type",
            "T",
            "--expected-revision",
            "latest",
        ],
    );
    assert_eq!(bad_revision.status.code(), Some(2));

    let bad_stream = foldstore(d, &["append", "$x", "--type", "T", "--data", "{}"]);
    assert_eq!(bad_stream.status.code(), Some(2));

    let bad_category = foldstore(d, &["read", "$all", "--category", "a-b"]);
    assert_eq!(bad_category.status.code(), Some(2));
    assert!(
        stderr(&bad_category).contains("contains `-`"),
        "{}",
        stderr(&bad_category)
    );

    let no_data = foldstore(d, &["append", "a-1", "--type", "T"]);
    assert_eq!(no_data.status.code(), Some(2));
    assert!(stderr(&no_data).contains("--data"), "{}", stderr(&no_data));
}

#[test]
fn bench_append_1_prints_a_json_report_last() {
    let dir = scratch();
    let out = foldstore(
        dir.path(),
        &[
            "bench",
            "append-1",
            "--events",
            "2000",
            "--concurrency",
            "8",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let last = text.lines().last().unwrap();
    let report: Value = serde_json::from_str(last).unwrap();
    for field in [
        "workload",
        "backend",
        "concurrency",
        "events",
        "events_per_sec",
        "p50_ms",
        "p99_ms",
        "baselines",
        "machine",
        "ratio_vs_raw_tx1",
        "ratio_vs_raw_tx1000",
        "ratio_vs_fsync",
        "peak_rss_mb",
    ] {
        assert!(report.get(field).is_some(), "missing {field} in {last}");
    }
    assert_eq!(report["workload"], "append-1");
    assert_eq!(report["concurrency"], 8);
    assert_eq!(report["events"], 2000);
    assert!(report["events_per_sec"].as_f64().unwrap() > 0.0);
    assert!(report["p50_ms"].as_f64().unwrap() <= report["p99_ms"].as_f64().unwrap());
    for b in [
        "fsync_per_sec",
        "raw_insert_tx1_per_sec",
        "raw_insert_tx1000_per_sec",
        "raw_insert_indexed_tx1000_per_sec",
        "raw_insert_indexed_tx1_per_sec",
    ] {
        assert!(
            report["baselines"][b].as_f64().unwrap() > 0.0,
            "{b} in {last}"
        );
    }
    for m in ["nproc", "kernel", "filesystem"] {
        assert!(report["machine"].get(m).is_some(), "machine.{m} in {last}");
    }
    assert_eq!(report["backend"], "sqlite");
    assert!(report["baselines"]["raw_pg_insert_per_sec"].is_null());
    assert!(report["ratio_vs_raw_pg"].is_null());
    // The same rows inserted raw into the store's own schema, one per commit.
    assert_schema_baseline(&report, "tx1");
    // The fresh benchmark directory is gone.
    assert_nothing_left(dir.path());
}

#[test]
fn bench_append_1_with_one_task_takes_turns_with_its_raw_baselines() {
    let dir = scratch();
    let out = foldstore(
        dir.path(),
        &[
            "bench",
            "append-1",
            "--events",
            "1500",
            "--concurrency",
            "1",
            "--json",
        ],
    );
    let report = report_of(&out);
    let last = report.to_string();
    assert_eq!(report["events"], 1500, "{last}");
    assert_eq!(report["baseline_turn_ms"], 250, "{last}");
    // Both raw baselines were measured in turns, each with its ratio.
    let raw = report["interleaved_raw_tx1_per_sec"].as_f64().unwrap();
    let ratio = report["ratio_vs_interleaved_raw_tx1"].as_f64().unwrap();
    let rate = report["events_per_sec"].as_f64().unwrap();
    assert!(raw > 0.0 && (rate / raw - ratio).abs() < 0.01, "{last}");
    assert_schema_baseline(&report, "tx1");
    // The store's rate counts its own turns only.
    let store_secs = report["store_turns_sec"].as_f64().unwrap();
    assert!((1500.0 / store_secs - rate).abs() / rate < 0.01, "{last}");
    assert_nothing_left(dir.path());
}

#[test]
fn bench_read_all_reports_the_raw_read_of_the_same_rows() {
    let dir = scratch();
    let out = foldstore(
        dir.path(),
        &["bench", "read-all", "--events", "3000", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let last = text.lines().last().unwrap();
    let report: Value = serde_json::from_str(last).unwrap();
    assert_eq!(report["workload"], "read-all");
    assert_eq!(report["events"], 3000, "{last}");
    let raw = report["raw_read_per_sec"].as_f64().unwrap();
    let ratio = report["ratio_vs_raw_read"].as_f64().unwrap();
    assert!(raw > 0.0 && ratio > 0.0, "{last}");
    let rate = report["events_per_sec"].as_f64().unwrap();
    assert!(
        (rate / raw - ratio).abs() < 0.01,
        "the ratio is the store's rate over the raw one: {last}"
    );
}

/// `http-read-all` reads every event through `GET /all` (the bench fails if a page
/// is not JSON or the count differs), and reports its rate over the same run's
/// in-process paging of `$all`.
#[test]
fn bench_http_read_all_pages_every_event_and_reports_the_in_process_ratio() {
    let dir = scratch();
    let out = foldstore(
        dir.path(),
        &["bench", "http-read-all", "--events", "3000", "--json"],
    );
    let report = report_of(&out);
    let last = report.to_string();
    assert_eq!(report["workload"], "http-read-all", "{last}");
    assert_eq!(report["events"], 3000, "{last}");
    assert_eq!(
        report["operations"], 3,
        "three pages of 1000, the last without next: {last}"
    );
    let base = report["inprocess_read_all_events_per_sec"]
        .as_f64()
        .unwrap();
    let rate = report["events_per_sec"].as_f64().unwrap();
    let ratio = report["ratio_vs_inprocess_read_all"].as_f64().unwrap();
    assert!(base > 0.0 && (rate / base - ratio).abs() < 0.01, "{last}");
    assert_nothing_left(dir.path());
}

/// Without the `grpc-bench` feature the gRPC workloads say how to build them.
#[cfg(not(feature = "grpc-bench"))]
#[test]
fn bench_grpc_workloads_name_the_feature_they_need() {
    let dir = scratch();
    for workload in ["grpc-read-all", "grpc-append"] {
        let out = foldstore(dir.path(), &["bench", workload, "--events", "10"]);
        assert!(!out.status.success(), "{workload}");
        assert!(
            stderr(&out).contains("--features grpc-bench"),
            "{}",
            stderr(&out)
        );
    }
    assert_nothing_left(dir.path());
}

/// `read-stream`'s report carries the same stream read raw, and the ratio of the two
/// medians.
fn assert_raw_stream_baseline(report: &Value) {
    let last = report.to_string();
    assert_eq!(report["workload"], "read-stream", "{last}");
    let raw = report["raw_read_stream_p50_ms"].as_f64().unwrap();
    let ours = report["p50_ms"].as_f64().unwrap();
    let ratio = report["ratio_vs_raw_read_stream"].as_f64().unwrap();
    assert!(raw > 0.0 && ours > 0.0, "{last}");
    assert!(
        (raw / ours - ratio).abs() / ratio < 0.05,
        "the ratio is the raw median over the store's: {last}"
    );
}

#[test]
fn bench_read_stream_reports_the_raw_read_of_the_same_stream() {
    let dir = scratch();
    let out = foldstore(
        dir.path(),
        &["bench", "read-stream", "--events", "500", "--json"],
    );
    let report = report_of(&out);
    assert_eq!(report["stream_length"], 500);
    assert_raw_stream_baseline(&report);
    assert_nothing_left(dir.path());
}

#[test]
fn bench_refuses_tmpfs() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let shm_is_tmpfs = mounts.lines().any(|l| {
        let f: Vec<_> = l.split_whitespace().collect();
        f.len() > 2 && f[1] == "/dev/shm" && f[2] == "tmpfs"
    });
    if !shm_is_tmpfs {
        eprintln!("skipped: /dev/shm is not a tmpfs here");
        return;
    }
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let out = foldstore(dir.path(), &["bench", "append-1", "--events", "10"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is on tmpfs"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bench_on_a_named_database_keeps_it() {
    let dir = scratch();
    let db = dir.path().join("mine").join("bench.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let url = format!("sqlite://{}", db.display());
    let out = foldstore(
        dir.path(),
        &[
            "bench",
            "append-batch",
            "--events",
            "200",
            "--database",
            &url,
            "--json",
        ],
    );
    let report = report_of(&out);
    assert_eq!(report["workload"], "append-batch");
    assert_eq!(report["events"], 200);
    // The same rows inserted raw into the store's own schema: SQLite's share.
    assert_schema_baseline(&report, "tx100");
    assert!(db.exists(), "the named database was removed");
    // Only the database's own files remain: the baselines cleaned up after themselves.
    for entry in std::fs::read_dir(db.parent().unwrap()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(name.starts_with("bench.db"), "left behind: {name}");
    }
    // The events are in it.
    let read = foldstore(
        dir.path(),
        &["--database", &url, "read", "$all", "--limit", "5"],
    );
    assert!(read.status.success(), "{}", stderr(&read));
    assert_eq!(json_lines(&read).len(), 5);
}

/// The PostgreSQL URL for a test, or `None` after saying on stderr that the test is
/// skipped. With `FOLDSTORE_REQUIRE_POSTGRES=1` (CI) a missing URL fails the test.
fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("FOLDSTORE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert_ne!(
                std::env::var("FOLDSTORE_REQUIRE_POSTGRES").as_deref(),
                Ok("1"),
                "{test}: FOLDSTORE_REQUIRE_POSTGRES=1 but FOLDSTORE_TEST_POSTGRES_URL is not set"
            );
            // Written to stderr directly: the test harness hides `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: set FOLDSTORE_TEST_POSTGRES_URL=postgres://root@127.0.0.1:5432/test to run it"
            );
            None
        }
    }
}

/// Runs `sql` on `url` and returns the first column of every row, as text.
fn postgres_query(url: &str, sql: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        let rows = client.simple_query(sql).await.unwrap();
        drop(client);
        let _ = driver.await;
        rows.iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect()
    })
}

/// Drops its PostgreSQL schema when dropped, also when the test fails.
struct DropSchema {
    url: String,
    schema: String,
}

impl Drop for DropSchema {
    fn drop(&mut self) {
        postgres_query(
            &self.url,
            &format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema),
        );
    }
}

#[test]
fn postgres_append_read_and_bench() {
    let Some(url) = postgres_url("postgres_append_read_and_bench") else {
        return;
    };
    let dir = scratch();
    let d = dir.path();
    let schema = format!("foldstore_cli_test_{:016x}", rand::random::<u64>());
    let _drop = DropSchema {
        url: url.clone(),
        schema: schema.clone(),
    };
    let db = ["--database", url.as_str(), "--pg-schema", schema.as_str()];
    // Connection settings are accepted on every command.
    let tuned = ["--pg-pool-size", "3", "--pg-statement-timeout-ms", "10000"];

    let opened = foldstore(
        d,
        &[
            &db[..],
            &tuned[..],
            &[
                "append",
                "account-1",
                "--type",
                "Opened",
                "--data",
                r#"{"owner":"ada"}"#,
                "--expected-revision",
                "no_stream",
            ],
        ]
        .concat(),
    );
    assert!(opened.status.success(), "{}", stderr(&opened));
    assert_eq!(json_lines(&opened)[0]["next_expected_revision"], 0);

    // The URL from the environment works too.
    let deposited = foldstore_with_env(
        d,
        &[
            "--pg-schema",
            &schema,
            "append",
            "account-1",
            "--type",
            "Deposited",
            "--expected-revision",
            "0",
        ],
        Some(r#"{"amount":10}"#),
        Some(&url),
    );
    assert!(deposited.status.success(), "{}", stderr(&deposited));
    assert_eq!(json_lines(&deposited)[0]["next_expected_revision"], 1);

    let read = foldstore(d, &[&db[..], &["read", "account-1"]].concat());
    assert!(read.status.success(), "{}", stderr(&read));
    let events = json_lines(&read);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["data"]["owner"], "ada");
    assert_eq!(events[1]["type"], "Deposited");
    assert_eq!(events[1]["data"]["amount"], 10);
    let all = foldstore(d, &[&db[..], &["read", "$all"]].concat());
    assert!(all.status.success(), "{}", stderr(&all));
    assert_eq!(json_lines(&all).len(), 2);

    let late = foldstore(
        d,
        &[
            &db[..],
            &[
                "append",
                "account-1",
                "--type",
                "Opened",
                "--data",
                "{}",
                "--expected-revision",
                "no_stream",
            ],
        ]
        .concat(),
    );
    assert_eq!(late.status.code(), Some(1), "{}", stderr(&late));

    let bench = foldstore(
        d,
        &[
            "bench",
            "append-1",
            "--events",
            "500",
            "--concurrency",
            "4",
            "--json",
            "--database",
            &url,
        ],
    );
    let report = report_of(&bench);
    let last = report.to_string();
    assert_eq!(report["backend"], "postgres");
    assert_eq!(report["workload"], "append-1");
    assert_eq!(report["events"], 500);
    assert!(report["events_per_sec"].as_f64().unwrap() > 0.0);
    assert!(
        report["baselines"]["raw_pg_insert_per_sec"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{last}"
    );
    assert_eq!(report["baselines"]["raw_pg_connections"], 4);
    assert!(report["ratio_vs_raw_pg"].as_f64().unwrap() > 0.0, "{last}");
    // The group commit's batching: every append took the fast path, at least one per
    // transaction.
    let transactions = report["fast_path_transactions"].as_u64().unwrap();
    assert!((1..=500).contains(&transactions), "{last}");
    assert!(
        report["appends_per_transaction"].as_f64().unwrap() >= 1.0,
        "{last}"
    );
    assert!(report["baselines"]["fsync_per_sec"].as_f64().unwrap() > 0.0);
    // The bench's fresh schema and directory are gone.
    let bench_schema = bench_schema_of(&bench);
    let left = postgres_query(
        &url,
        &format!("SELECT nspname FROM pg_namespace WHERE nspname = '{bench_schema}'"),
    );
    assert!(left.is_empty(), "schema {bench_schema} left behind");
    let files: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(files.is_empty(), "left behind: {files:?}");

    // append-batch's baseline: the same rows raw into a fresh copy of the store's
    // schema, beside the bench's own, and both schemas are dropped afterwards.
    let batch = foldstore(
        d,
        &[
            "bench",
            "append-batch",
            "--events",
            "400",
            "--concurrency",
            "2",
            "--json",
            "--database",
            &url,
        ],
    );
    let report = report_of(&batch);
    assert_eq!(report["workload"], "append-batch");
    assert_schema_baseline(&report, "tx100");
    let bench_schema = bench_schema_of(&batch);
    let stream = foldstore(
        d,
        &[
            "bench",
            "read-stream",
            "--events",
            "300",
            "--json",
            "--database",
            &url,
        ],
    );
    assert_raw_stream_baseline(&report_of(&stream));
    let stream_schema = bench_schema_of(&stream);
    let left = postgres_query(
        &url,
        &format!(
            "SELECT nspname FROM pg_namespace \
             WHERE nspname IN ('{bench_schema}', '{bench_schema}_raw', '{stream_schema}')"
        ),
    );
    assert!(left.is_empty(), "left behind: {left:?}");

    // The append test's schema holds the two events, untouched by the bench.
    let count = postgres_query(
        &url,
        &format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'"),
    );
    assert_eq!(count, ["1"]);
}

/// `bench subscribe-latency --subscriber-process`: the subscriber runs in a second
/// foldstore process on the same PostgreSQL schema and reports every delivery.
#[test]
fn postgres_subscribe_latency_across_processes() {
    let Some(url) = postgres_url("postgres_subscribe_latency_across_processes") else {
        return;
    };
    let dir = scratch();
    let bench = foldstore(
        dir.path(),
        &[
            "bench",
            "subscribe-latency",
            "--subscriber-process",
            "--rate",
            "200",
            "--events",
            "400",
            "--concurrency",
            "4",
            "--json",
            "--database",
            &url,
        ],
    );
    assert!(bench.status.success(), "{}", stderr(&bench));
    let text = stdout(&bench);
    let report: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(report["subscriber"], "other process");
    assert_eq!(report["events"], 400);
    assert!(report["p99_ms"].as_f64().unwrap() > 0.0, "{report}");

    // On SQLite it is refused at once, before any baseline is measured.
    let refused = foldstore(
        dir.path(),
        &["bench", "subscribe-latency", "--subscriber-process"],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("postgres://"),
        "{}",
        stderr(&refused)
    );
    assert!(!stderr(&refused).contains("measuring baselines"));
}

/// `foldstore serve` on a free port: prints its URL, answers HTTP, appends land in the
/// data directory, and SIGINT stops it cleanly (exit 0, store closed).
#[cfg(unix)]
#[test]
fn serve_answers_http_and_stops_on_sigint() {
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpStream;

    let dir = scratch();
    let d = dir.path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_foldstore"))
        .env_remove("FOLDSTORE_DATA_DIR")
        .env_remove("FOLDSTORE_DATABASE_URL")
        .args(["serve", "--port", "0"])
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();

    let request = |text: String| {
        let mut stream = TcpStream::connect(&host).unwrap();
        stream.write_all(text.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let body =
        r#"{"expected_revision":"no_stream","events":[{"type":"Opened","data":{"owner":"ada"}}]}"#;
    let appended = request(format!(
        "POST /streams/account-1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert!(appended.starts_with("HTTP/1.1 200"), "{appended}");
    assert!(
        appended.contains("\"next_expected_revision\":0"),
        "{appended}"
    );
    let health = request("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned());
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The store was closed: the event is there for the next command.
    let read = foldstore(d, &["read", "account-1"]);
    assert!(read.status.success(), "{}", stderr(&read));
    assert!(String::from_utf8_lossy(&read.stdout).contains("Opened"));
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (path, query) = url.split_once('?').map_or((url, ""), |(p, q)| (p, q));
    let (base, _) = path.rsplit_once('/').expect("a URL with a database");
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{base}/{database}{query}")
}

/// `url` with its user replaced by `user`.
fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{host}")
}

/// Checks a failed start-up: exit status 1, `needles` each said exactly once on
/// stderr (in the one error line, or `serve`'s one log line), nothing on stdout, and no internal error or repeated sentence.
fn assert_start_up_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for needle in needles {
        assert_eq!(err.matches(needle).count(), 1, "{needle:?} once in: {err}");
    }
    // The data commands print `error: ...`; `serve` writes the same as a log line.
    let lines = err.matches("error:").count() + err.matches(" ERROR ").count();
    assert_eq!(lines, 1, "one error line: {err}");
    assert!(err.matches("nothing was written").count() <= 1, "{err}");
    assert!(!err.contains("internal error"), "{err}");
    assert!(stdout(out).is_empty(), "{}", stdout(out));
}

/// Start-up errors the CLI prints for an unreachable PostgreSQL: refused (with host
/// and port) and unknown host, for the data commands and for `serve`.
#[test]
fn an_unreachable_postgres_is_named_once() {
    let dir = scratch();
    let d = dir.path();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let refused = format!("postgres://app@127.0.0.1:{port}/events");
    let server = format!("127.0.0.1:{port}");
    let read = foldstore(d, &["--database", &refused, "read", "x-1"]);
    assert_start_up_error(&read, &[&server, "connection refused"]);
    let append = foldstore(
        d,
        &[
            "--database",
            &refused,
            "append",
            "x-1",
            "--type",
            "T",
            "--data",
            "{}",
        ],
    );
    assert_start_up_error(&append, &[&server, "connection refused"]);
    let serve = foldstore(d, &["--database", &refused, "serve", "--port", "0"]);
    assert_start_up_error(&serve, &[&server, "connection refused"]);

    let unknown = "postgres://app@nonexistent.invalid:5432/events";
    let read = foldstore(d, &["--database", unknown, "read", "x-1"]);
    assert_start_up_error(&read, &["\"nonexistent.invalid\" does not resolve"]);
}

/// A missing database or role is named, with how to create it, by the data commands
/// and by `serve`.
#[test]
fn a_missing_postgres_database_or_role_is_named_once() {
    let Some(url) = postgres_url("a_missing_postgres_database_or_role_is_named_once") else {
        return;
    };
    let dir = scratch();
    let d = dir.path();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let database = format!("foldstore_missing_{suffix}");
    let missing = with_database(&url, &database);
    let named = format!("database \"{database}\" does not exist");
    let create = format!("createdb {database}");
    let read = foldstore(d, &["--database", &missing, "read", "x-1"]);
    assert_start_up_error(&read, &[&named, &create]);
    let serve = foldstore(d, &["--database", &missing, "serve", "--port", "0"]);
    assert_start_up_error(&serve, &[&named, &create]);

    let role = format!("foldstore_ghost_{suffix}");
    let ghost = with_user(&url, &role);
    let append = foldstore(
        d,
        &[
            "--database",
            &ghost,
            "append",
            "x-1",
            "--type",
            "T",
            "--data",
            "{}",
        ],
    );
    assert_start_up_error(
        &append,
        &[
            &format!("role \"{role}\" does not exist"),
            &format!("CREATE ROLE \"{role}\" LOGIN"),
        ],
    );
}
