//! `foldstore subscriptions ...` against a `foldstore serve` child process, and what
//! `serve` does with its persistent subscriptions: serves them over HTTP, and writes
//! each group's checkpoint when it stops, so that a restarted server resumes after
//! what was acked (guards against a `serve` that forgets to shut them down).

#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// `foldstore serve --port 0` in `dir`, and its `host:port`.
fn serve(dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_foldstore"))
        .env_remove("FOLDSTORE_DATA_DIR")
        .env_remove("FOLDSTORE_DATABASE_URL")
        .args(["serve", "--port", "0"])
        .current_dir(dir)
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
    (child, host)
}

/// Stops a server with SIGINT; it must exit cleanly.
fn stop(child: Child) {
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
}

/// `foldstore --server http://host args`.
fn cli(dir: &Path, host: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_foldstore"))
        .env_remove("FOLDSTORE_SERVER")
        .env_remove("FOLDSTORE_TOKEN")
        .arg("--server")
        .arg(format!("http://{host}"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The one JSON line a successful command printed.
fn json_line(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One HTTP/1.1 request; the answer's JSON body.
fn http(host: &str, method: &str, path: &str, body: Option<&str>) -> Value {
    let mut stream = TcpStream::connect(host).unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 2"),
        "{method} {path}: {answer}"
    );
    let json = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(json).unwrap_or(Value::Null)
}

#[test]
fn groups_are_managed_from_the_cli_and_a_restarted_server_resumes_after_the_checkpoint() {
    let dir = scratch();
    let d = dir.path();
    let (server, host) = serve(d);
    for n in 0..4 {
        let data = format!("{{\"n\":{n}}}");
        let out = cli(
            d,
            &host,
            &["append", "job-1", "--type", "Job", "--data", &data],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let created = json_line(&cli(
        d,
        &host,
        &[
            "subscriptions",
            "create",
            "job-1",
            "mailer",
            "--message-timeout-ms",
            "60000",
            "--strategy",
            "pinned",
        ],
    ));
    assert_eq!(created["settings"]["strategy"], "pinned");
    let again = cli(d, &host, &["subscriptions", "create", "job-1", "mailer"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("subscription_exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let all = json_line(&cli(
        d,
        &host,
        &[
            "subscriptions",
            "create",
            "$all",
            "audit",
            "--category",
            "job",
            "--type",
            "Job",
        ],
    ));
    assert_eq!(all["settings"]["filter"]["category"], "job");
    let listed = json_line(&cli(d, &host, &["subscriptions", "list"]));
    assert_eq!(listed["subscriptions"].as_array().unwrap().len(), 2);
    let of_all = json_line(&cli(d, &host, &["subscriptions", "list", "$all"]));
    assert_eq!(of_all["subscriptions"][0]["group"], "audit");
    let updated = json_line(&cli(
        d,
        &host,
        &[
            "subscriptions",
            "update",
            "job-1",
            "mailer",
            "--max-retry-count",
            "3",
        ],
    ));
    assert_eq!(updated["settings"]["max_retry_count"], 3);
    assert_eq!(updated["settings"]["strategy"], "pinned");

    // Two events acked and one parked over HTTP.
    let polled = http(
        &host,
        "POST",
        "/subscriptions/job-1/mailer/messages?count=3&wait_ms=5000",
        None,
    );
    let keys: Vec<&str> = polled["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["0", "1", "2"]);
    http(
        &host,
        "POST",
        "/subscriptions/job-1/mailer/ack",
        Some(r#"{"keys":["0","1"]}"#),
    );
    http(
        &host,
        "POST",
        "/subscriptions/job-1/mailer/nack",
        Some(r#"{"keys":["2"],"action":"park"}"#),
    );
    for _ in 0..200 {
        let info = json_line(&cli(
            d,
            &host,
            &["subscriptions", "info", "job-1", "mailer"],
        ));
        if info["parked"] == 1 && info["finished"] == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    stop(server);

    // The checkpoint was written on the way out: the restarted server starts after it.
    let (server, host) = serve(d);
    let info = json_line(&cli(
        d,
        &host,
        &["subscriptions", "info", "job-1", "mailer"],
    ));
    assert_eq!(info["checkpoint"], "2", "{info}");
    assert_eq!(info["parked"], 1);
    let replayed = json_line(&cli(
        d,
        &host,
        &["subscriptions", "replay-parked", "job-1", "mailer"],
    ));
    assert_eq!(replayed["replayed"], 1);
    let mut revisions = Vec::new();
    for _ in 0..10 {
        let polled = http(
            &host,
            "POST",
            "/subscriptions/job-1/mailer/messages?count=10&wait_ms=2000",
            None,
        );
        revisions.extend(
            polled["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["event"]["revision"].as_u64().unwrap()),
        );
        if revisions.len() >= 2 {
            break;
        }
    }
    revisions.sort();
    assert_eq!(
        revisions,
        [2, 3],
        "the replayed parked event and the one after the checkpoint"
    );
    let deleted = json_line(&cli(
        d,
        &host,
        &["subscriptions", "delete", "job-1", "mailer"],
    ));
    assert_eq!(deleted["deleted"], true);
    let missing = cli(d, &host, &["subscriptions", "info", "job-1", "mailer"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("subscription_not_found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    stop(server);

    let local = Command::new(env!("CARGO_BIN_EXE_foldstore"))
        .env_remove("FOLDSTORE_SERVER")
        .args(["subscriptions", "list"])
        .current_dir(d)
        .output()
        .unwrap();
    assert_eq!(local.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&local.stderr).contains("--server"));
}
