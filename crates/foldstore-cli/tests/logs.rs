//! The server's logs, read from the built binary's standard error: what an operator
//! sees at the default level (a start-up summary, refused and failed requests with
//! their route template, code and token name, never a token) and at `debug` (every
//! request), in the text and the JSON format.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A scratch directory on the build's disk.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// `foldstore` in `dir` without FOLDSTORE_* variables or RUST_LOG, plus `env`.
fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_foldstore"));
    for var in [
        "FOLDSTORE_DATA_DIR",
        "FOLDSTORE_DATABASE_URL",
        "FOLDSTORE_SERVER",
        "FOLDSTORE_TOKEN",
        "FOLDSTORE_TOKENS_FILE",
        "FOLDSTORE_LOG_FORMAT",
        "FOLDSTORE_SLOW_REQUEST_MS",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    c.envs(env.iter().copied()).args(args).current_dir(dir);
    c
}

/// A token named `name` made by `foldstore token create`, appended to `file`.
fn make_token(dir: &Path, file: &Path, name: &str, scopes: &str, prefix: Option<&str>) -> String {
    let mut args = vec![
        "token",
        "create",
        "--name",
        name,
        "--scopes",
        scopes,
        "--append-to",
        file.to_str().unwrap(),
    ];
    if let Some(p) = prefix {
        args.extend(["--prefix", p]);
    }
    let out = command(dir, &args, &[]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned()
}

/// A `foldstore serve` child whose standard error goes to a file.
struct Server {
    child: Child,
    address: String,
    log: std::path::PathBuf,
}

impl Server {
    fn start(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let log = dir.join("server.log");
        let mut args = vec!["serve", "--port", "0"];
        args.extend_from_slice(extra);
        let mut child = command(dir, &args, env)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let address = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .trim_end_matches('/')
            .to_owned();
        Self {
            child,
            address,
            log,
        }
    }

    /// Sends one request and returns its status.
    fn request(&self, method: &str, target: &str, token: Option<&str>, body: &str) -> u16 {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            stream,
            "{method} {target} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.address,
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {response:?}"))
    }

    /// Stops the server with SIGINT, waits, and returns its log.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An append whatever the stream's revision.
const EVENT: &str =
    r#"{"expected_revision":"any","events":[{"type":"Opened","data":{"owner":"ada"}}]}"#;
/// An append that only a stream that does not exist accepts.
const FIRST_EVENT: &str =
    r#"{"expected_revision":"no_stream","events":[{"type":"Opened","data":{"owner":"ada"}}]}"#;

/// A server with tokens: an admin token `ops` and a token `acct-reader` that reads
/// `acct-` streams only; returns the server and both tokens.
fn server_with_tokens(
    dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Server, String, String) {
    let file = dir.join("tokens.txt");
    let admin = make_token(dir, &file, "ops", "admin", None);
    let reader = make_token(dir, &file, "acct-reader", "read", Some("acct-"));
    let mut args = vec!["--tokens-file", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    (Server::start(dir, &args, env), admin, reader)
}

/// The line of `log` that contains every one of `needles`.
fn line_with<'a>(log: &'a str, needles: &[&str]) -> &'a str {
    log.lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no line with {needles:?} in:\n{log}"))
}

#[test]
fn the_default_level_logs_the_start_up_and_refused_requests_with_token_names_never_tokens() {
    let dir = scratch();
    let (server, admin, reader) = server_with_tokens(dir.path(), &[], &[]);
    assert_eq!(
        server.request("POST", "/streams/acct-1", Some(&admin), EVENT),
        200
    );
    assert_eq!(
        server.request("GET", "/streams/acct-1", Some(&reader), ""),
        200
    );
    assert_eq!(
        server.request("GET", "/streams/other-1", Some(&reader), ""),
        403
    );
    assert_eq!(
        server.request("GET", "/streams/acct-2", Some(&reader), ""),
        404
    );
    assert_eq!(
        server.request("POST", "/streams/acct-1", Some(&admin), FIRST_EVENT),
        409
    );
    assert_eq!(
        server.request("GET", "/all", Some("fst_not-a-real-token"), ""),
        401
    );
    let log = server.stop();

    let start = line_with(&log, &["foldstore serving"]);
    for field in [
        "backend=\"sqlite\"",
        "address=http://127.0.0.1:",
        "auth=\"tokens from ",
        "data=",
        "body_limit_bytes=",
        "slow_request_ms=1000",
    ] {
        assert!(start.contains(field), "{field} missing from {start}");
    }
    line_with(
        &log,
        &[
            "INFO",
            "request refused",
            "method=\"GET\"",
            "route=\"/streams/{stream}\"",
            "status=403",
            "code=\"stream_forbidden\"",
            "token=\"acct-reader\"",
        ],
    );
    line_with(
        &log,
        &[
            "request refused",
            "route=\"/streams/{stream}\"",
            "status=404",
            "code=\"stream_not_found\"",
            "token=\"acct-reader\"",
            "duration_ms=",
        ],
    );
    line_with(
        &log,
        &[
            "request refused",
            "method=\"POST\"",
            "status=409",
            "code=\"wrong_expected_revision\"",
            "token=\"ops\"",
        ],
    );
    line_with(
        &log,
        &[
            "request refused",
            "route=\"/all\"",
            "status=401",
            "code=\"unauthorized\"",
        ],
    );
    assert!(
        !log.contains("status=200"),
        "successful requests are logged at debug only:\n{log}"
    );
    for secret in [&admin, &reader] {
        assert!(
            !log.contains(secret.as_str()),
            "a token is in the log:\n{log}"
        );
        assert!(
            !log.contains(&secret[4..20]),
            "part of a token is in the log:\n{log}"
        );
    }
    assert!(
        !log.contains("fst_not-a-real-token"),
        "a presented token is in the log:\n{log}"
    );
    assert!(
        !log.contains("ada"),
        "an event's data is in the log:\n{log}"
    );
    assert!(log.contains("foldstore stopped"), "{log}");
}

#[test]
fn json_lines_parse_and_carry_the_request_fields() {
    let dir = scratch();
    let (server, _admin, reader) = server_with_tokens(dir.path(), &["--log-format", "json"], &[]);
    assert_eq!(
        server.request("GET", "/streams/other-1", Some(&reader), ""),
        403
    );
    let log = server.stop();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let start = lines
        .iter()
        .find(|l| l["message"] == "foldstore serving")
        .unwrap_or_else(|| panic!("no start-up line in {log}"));
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["backend"], "sqlite");
    assert!(start["data"].as_str().unwrap().ends_with("foldstore.db"));
    let refused = lines
        .iter()
        .find(|l| l["message"] == "request refused")
        .unwrap_or_else(|| panic!("no request line in {log}"));
    assert_eq!(refused["method"], "GET");
    assert_eq!(refused["route"], "/streams/{stream}");
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["code"], "stream_forbidden");
    assert_eq!(refused["token"], "acct-reader");
    assert!(refused["duration_ms"].as_f64().unwrap() >= 0.0);
}

#[test]
fn debug_logs_every_request_and_a_zero_threshold_logs_none_as_slow() {
    let dir = scratch();
    let server = Server::start(
        dir.path(),
        &["--slow-request-ms", "0"],
        &[("RUST_LOG", "debug")],
    );
    assert_eq!(server.request("POST", "/streams/acct-1", None, EVENT), 200);
    assert_eq!(server.request("GET", "/streams/acct-1", None, ""), 200);
    assert_eq!(server.request("GET", "/health", None, ""), 200);
    let log = server.stop();
    line_with(
        &log,
        &[
            "DEBUG",
            "request",
            "method=\"POST\"",
            "route=\"/streams/{stream}\"",
            "status=200",
        ],
    );
    line_with(
        &log,
        &[
            "DEBUG",
            "request",
            "method=\"GET\"",
            "route=\"/streams/{stream}\"",
            "status=200",
        ],
    );
    line_with(
        &log,
        &["DEBUG", "request", "route=\"/health\"", "status=200"],
    );
    assert!(!log.contains("slow request"), "{log}");
    assert!(
        !log.contains("ada"),
        "an event's data is in the log:\n{log}"
    );
}

#[test]
fn a_bad_rust_log_is_a_usage_error() {
    let dir = scratch();
    let out = command(
        dir.path(),
        &["serve", "--port", "0"],
        &[("RUST_LOG", "foldstore_server=loud")],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RUST_LOG"));
}
