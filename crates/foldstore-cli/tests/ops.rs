//! The operator commands end to end, with the built binary: remote mode against a
//! `foldstore serve` on a free loopback port (tokens, HTTPS), local mode on a SQLite
//! directory, `tail`, `delete`, and export → import round trips, including an
//! interrupted import and an interrupted export that are resumed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

/// A scratch directory on the build's disk.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// `foldstore` in `dir` with no FOLDSTORE_* variables but `env`.
fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_foldstore"));
    for var in [
        "FOLDSTORE_DATA_DIR",
        "FOLDSTORE_DATABASE_URL",
        "FOLDSTORE_SERVER",
        "FOLDSTORE_TOKEN",
        "FOLDSTORE_CA_CERT",
        "FOLDSTORE_TOKENS_FILE",
    ] {
        c.env_remove(var);
    }
    c.envs(env.iter().copied()).args(args).current_dir(dir);
    c
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(dir, args, env)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs and asserts success.
fn ok(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = run(dir, args, env);
    assert!(
        o.status.success(),
        "foldstore {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// A `foldstore serve` child, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["serve", "--port", "0"];
        args.extend_from_slice(extra);
        let mut child = command(dir, &args, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .trim_end_matches('/')
            .to_owned();
        Self { child, url }
    }

    /// Stops the server with SIGINT and waits, so the store is closed.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token made by `foldstore token create`, appended to `file`.
fn make_token(dir: &Path, file: &Path, scopes: &str, prefix: Option<&str>) -> String {
    let mut args = vec![
        "token",
        "create",
        "--scopes",
        scopes,
        "--append-to",
        file.to_str().unwrap(),
    ];
    if let Some(p) = prefix {
        args.extend(["--prefix", p]);
    }
    let out = ok(dir, &args, &[]);
    let mut out_lines = out.lines();
    let token = out_lines.next().unwrap().to_owned();
    let line = out_lines.next().unwrap();
    assert!(token.starts_with("fst_") && token.len() == 68, "{token}");
    assert!(line.contains("sha256:") && !line.contains(&token), "{line}");
    token
}

/// Export lines without what a new store assigns anew (`recorded_at`, `position`).
fn comparable(export: &str) -> Vec<Value> {
    lines(export)
        .into_iter()
        .map(|mut v| {
            let o = v.as_object_mut().unwrap();
            o.remove("recorded_at");
            o.remove("position");
            v
        })
        .collect()
}

#[test]
fn every_command_has_help_with_examples() {
    let dir = scratch();
    for cmd in [
        vec!["append"],
        vec!["read"],
        vec!["tail"],
        vec!["delete"],
        vec!["export"],
        vec!["import"],
        vec!["serve"],
        vec!["bench"],
        vec!["token", "create"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let help = ok(dir.path(), &args, &[]);
        assert!(help.contains("Examples:"), "{cmd:?}: {help}");
    }
    let top = ok(dir.path(), &["--help"], &[]);
    for word in ["tail", "delete", "export", "import", "token", "--server"] {
        assert!(top.contains(word), "{word} missing from --help");
    }
}

#[test]
fn remote_mode_with_tokens_append_read_tail_delete() {
    let dir = scratch();
    let d = dir.path();
    let tokens = d.join("tokens.txt");
    let admin = make_token(d, &tokens, "admin", None);
    let accounts = make_token(d, &tokens, "read,write", Some("account-"));
    let server = Server::start(d, &["--tokens-file", tokens.to_str().unwrap()]);
    let url = server.url.clone();
    let as_admin = [
        ("FOLDSTORE_SERVER", url.as_str()),
        ("FOLDSTORE_TOKEN", admin.as_str()),
    ];
    let as_accounts = [
        ("FOLDSTORE_SERVER", url.as_str()),
        ("FOLDSTORE_TOKEN", accounts.as_str()),
    ];

    // No token: 401, exit 1, and the message says what to do.
    let refused = run(
        d,
        &[
            "--server",
            &url,
            "append",
            "account-1",
            "--type",
            "Opened",
            "--data",
            "{}",
        ],
        &[],
    );
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("unauthorized"),
        "{stderr}"
    );

    // The tail starts before the appends and sees them live.
    // The store is empty, so a tail from the start waits live for the appends.
    let tail = command(
        d,
        &["tail", "$all", "--from", "start", "--count", "3"],
        &as_accounts,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    let first = ok(
        d,
        &[
            "append",
            "account-1",
            "--type",
            "Opened",
            "--data",
            r#"{"owner":"ada"}"#,
            "--expected-revision",
            "no_stream",
            "--metadata",
            r#"{"by":"test"}"#,
        ],
        &as_accounts,
    );
    assert_eq!(lines(&first)[0]["next_expected_revision"], 0);
    ok(
        d,
        &["append", "order-1", "--type", "Placed", "--data", "{}"],
        &as_admin,
    );
    let forbidden = run(
        d,
        &["append", "order-1", "--type", "Placed", "--data", "{}"],
        &as_accounts,
    );
    assert_eq!(forbidden.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&forbidden.stderr).contains("stream_forbidden"));
    ok(
        d,
        &[
            "append",
            "account-1",
            "--type",
            "Blob",
            "--data",
            "bytes!",
            "--content-type",
            "application/octet-stream",
        ],
        &as_accounts,
    );
    ok(
        d,
        &["append", "account-2", "--type", "Opened", "--data", "{}"],
        &as_accounts,
    );

    let tailed = tail.wait_with_output().unwrap();
    assert!(
        tailed.status.success(),
        "{}",
        String::from_utf8_lossy(&tailed.stderr)
    );
    let tailed = lines(&String::from_utf8(tailed.stdout).unwrap());
    let streams: Vec<&str> = tailed
        .iter()
        .map(|e| e["stream"].as_str().unwrap())
        .collect();
    assert_eq!(
        streams,
        ["account-1", "account-1", "account-2"],
        "order-1 is filtered out"
    );

    // Reads: the accounts token sees only its prefix in $all.
    let all = lines(&ok(d, &["read", "$all"], &as_accounts));
    assert_eq!(all.len(), 3);
    let all_admin = lines(&ok(d, &["read", "$all"], &as_admin));
    assert_eq!(all_admin.len(), 4);
    let stream = lines(&ok(d, &["read", "account-1"], &as_accounts));
    assert_eq!(stream[0]["data"]["owner"], "ada");
    assert_eq!(stream[0]["metadata"]["by"], "test");
    assert_eq!(stream[1]["content_type"], "application/octet-stream");
    assert_eq!(stream[1]["data_base64"], "Ynl0ZXMh");
    let backwards = lines(&ok(
        d,
        &["read", "account-1", "--backwards", "--limit", "1"],
        &as_accounts,
    ));
    assert_eq!(backwards[0]["revision"], 1);

    // A tail from the start replays, over a stream subscription.
    let replay = lines(&ok(
        d,
        &["tail", "account-1", "--from", "start", "--count", "2"],
        &as_accounts,
    ));
    assert_eq!(replay.len(), 2);
    assert_eq!(replay[1]["type"], "Blob");

    // Delete needs admin; soft delete hides the stream, tombstone ends it.
    let refused = run(d, &["delete", "account-2"], &as_accounts);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("insufficient_scope"));
    ok(d, &["delete", "account-2"], &as_admin);
    let gone = run(d, &["read", "account-2"], &as_admin);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("stream_not_found"));
    ok(d, &["delete", "order-1", "--tombstone"], &as_admin);
    let tombstoned = run(
        d,
        &["append", "order-1", "--type", "X", "--data", "{}"],
        &as_admin,
    );
    assert!(String::from_utf8_lossy(&tombstoned.stderr).contains("stream_tombstoned"));

    // Export through the server, import into another server, re-import: no duplicates.
    let export = ok(d, &["export"], &as_admin);
    assert_eq!(lines(&export).len(), 4);
    let file = d.join("remote.ndjson");
    std::fs::write(&file, &export).unwrap();
    server.stop();

    let other = scratch();
    let target = Server::start(other.path(), &[]);
    let to = [("FOLDSTORE_SERVER", target.url.as_str())];
    let summary = lines(&ok(other.path(), &["import", file.to_str().unwrap()], &to));
    assert_eq!(summary[0]["appended"], 4);
    let again = lines(&ok(other.path(), &["import", file.to_str().unwrap()], &to));
    assert_eq!(
        (
            again[0]["appended"].as_u64(),
            again[0]["already_present"].as_u64()
        ),
        (Some(0), Some(4))
    );
    let copied = ok(other.path(), &["export"], &to);
    assert_eq!(comparable(&copied), comparable(&export));
}

/// Fills `dir/source` with a mix of events (JSON with odd spacing and key order,
/// multi-line JSON, binary data, metadata) on three streams: `3 * events_per_stream`
/// through `import` of a hand-made file, then one through `append`.
fn fill_local(dir: &Path, events_per_stream: usize) {
    let mut out = Vec::new();
    let mut n = 0;
    for i in 0..events_per_stream {
        for (s, stream) in ["account-1", "order-7", "account-2"].iter().enumerate() {
            let data = match (i + s) % 4 {
                0 => format!(r#"{{"z": {i}, "a": "x"}}"#),
                1 => format!("{{\n  \"multi\": {i}\n}}"),
                2 => format!(r#"{{"k":[{i},true,null]}}"#),
                _ => format!("raw bytes {i}"),
            };
            let binary = data.starts_with("raw");
            let v = serde_json::json!({
                "stream": stream,
                "revision": i,
                "id": format!("00000000-0000-4000-8000-{n:012}"),
                "type": if binary { "Blob" } else { "Changed" },
                "content_type": if binary { "application/octet-stream" } else { "application/json" },
                "metadata": {"seq": n, "b": 1, "a": 2},
                "data_base64": base64_encode(data.as_bytes()),
            });
            out.push(v.to_string());
            n += 1;
        }
    }
    let path = dir.join("seed.ndjson");
    std::fs::write(&path, out.join("\n") + "\n").unwrap();
    ok(
        dir,
        &["--data-dir", "source", "import", path.to_str().unwrap()],
        &[],
    );
    // And one through `append`, with spacing kept in data and metadata.
    ok(
        dir,
        &[
            "--data-dir",
            "source",
            "append",
            "account-1",
            "--type",
            "Noted",
            "--data",
            r#"{"b":1,  "a":2}"#,
            "--metadata",
            r#"{"z": 1, "a": 2}"#,
        ],
        &[],
    );
}

/// Standard base64, for building test input.
fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn local_export_import_round_trips_exactly() {
    let dir = scratch();
    let d = dir.path();
    fill_local(d, 20);
    let export = ok(d, &["--data-dir", "source", "export"], &[]);
    let exported = lines(&export);
    assert_eq!(exported.len(), 61);
    // JSON data is kept byte for byte on one line, multi-line JSON and binary as base64.
    assert!(export.contains(r#""data":{"z": 0, "a": "x"}"#), "{export}");
    assert!(export.contains(r#""data":{"b":1,  "a":2}"#));
    assert!(export.contains(r#""metadata":{"z": 1, "a": 2}"#));
    let file = d.join("export.ndjson");
    ok(
        d,
        &[
            "--data-dir",
            "source",
            "export",
            "--output",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), export);

    let summary = lines(&ok(
        d,
        &["--data-dir", "copy", "import", file.to_str().unwrap()],
        &[],
    ));
    assert_eq!(summary[0]["appended"], 61);
    let copied = ok(d, &["--data-dir", "copy", "export"], &[]);
    assert_eq!(comparable(&copied), comparable(&export));
    // Positions too, here: the copy was empty and has no other writer.
    let positions = |text: &str| {
        lines(text)
            .iter()
            .map(|v| v["position"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(positions(&copied), positions(&export));
    // The stored bytes, read back through `read`, agree as well.
    for stream in ["account-1", "order-7", "account-2"] {
        let a = ok(d, &["--data-dir", "source", "read", stream], &[]);
        let b = ok(d, &["--data-dir", "copy", "read", stream], &[]);
        let strip = |t: &str| {
            lines(t)
                .into_iter()
                .map(|mut v| {
                    v.as_object_mut().unwrap().remove("recorded_at");
                    v
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&a), strip(&b), "{stream}");
    }

    // A local tail replays from the start through a subscription.
    let tailed = lines(&ok(
        d,
        &[
            "--data-dir",
            "copy",
            "tail",
            "$all",
            "--from",
            "start",
            "--count",
            "5",
            "--category",
            "order",
        ],
        &[],
    ));
    assert_eq!(tailed.len(), 5);
    assert!(tailed.iter().all(|e| e["stream"] == "order-7"));
    // A stream export starts where asked.
    let part = lines(&ok(
        d,
        &["--data-dir", "copy", "export", "order-7", "--from", "18"],
        &[],
    ));
    assert_eq!(
        part.iter()
            .map(|e| e["revision"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [18, 19]
    );
}

#[test]
fn an_interrupted_import_resumes_without_duplicates() {
    let dir = scratch();
    let d = dir.path();
    fill_local(d, 40);
    let file = d.join("export.ndjson");
    ok(
        d,
        &[
            "--data-dir",
            "source",
            "export",
            "--output",
            file.to_str().unwrap(),
        ],
        &[],
    );
    let export = std::fs::read_to_string(&file).unwrap();
    let total = export.lines().count();
    assert_eq!(total, 121);

    // The import is cut off in the middle of line 71 (as if the file were still
    // being copied): it imports the 70 lines before and fails, naming the line.
    let cut_at = export.match_indices('\n').nth(69).unwrap().0 + 1 + 40;
    let partial = d.join("partial.ndjson");
    std::fs::write(&partial, &export[..cut_at]).unwrap();
    let interrupted = run(
        d,
        &[
            "--data-dir",
            "copy",
            "import",
            partial.to_str().unwrap(),
            "--batch",
            "7",
        ],
        &[],
    );
    assert_eq!(interrupted.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&interrupted.stderr);
    assert!(stderr.contains("line 71 is cut off"), "{stderr}");
    assert_eq!(
        lines(&ok(d, &["--data-dir", "copy", "read", "$all"], &[])).len(),
        70
    );

    // Resumed with the whole file and other batch boundaries: the 70 are recognised.
    let resumed = lines(&ok(
        d,
        &[
            "--data-dir",
            "copy",
            "import",
            file.to_str().unwrap(),
            "--batch",
            "50",
        ],
        &[],
    ));
    assert_eq!(resumed[0]["already_present"], 70);
    assert_eq!(resumed[0]["appended"], 51);
    // And once more: nothing appended.
    let again = lines(&ok(
        d,
        &["--data-dir", "copy", "import", file.to_str().unwrap()],
        &[],
    ));
    assert_eq!(
        (
            again[0]["appended"].as_u64(),
            again[0]["already_present"].as_u64()
        ),
        (Some(0), Some(121))
    );

    let copied = ok(d, &["--data-dir", "copy", "export"], &[]);
    assert_eq!(comparable(&copied), comparable(&export));
    let ids: std::collections::HashSet<String> = lines(&copied)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), total, "no event twice");

    // --any-revision re-runs are idempotent by id, even across different batches.
    let any = lines(&ok(
        d,
        &[
            "--data-dir",
            "copy",
            "import",
            file.to_str().unwrap(),
            "--any-revision",
            "--batch",
            "3",
        ],
        &[],
    ));
    assert_eq!(any[0]["appended"], 0);
    assert_eq!(
        lines(&ok(d, &["--data-dir", "copy", "read", "$all"], &[])).len(),
        total
    );

    // An import into a store holding other events at those revisions stops clearly.
    ok(
        d,
        &[
            "--data-dir",
            "other",
            "append",
            "account-1",
            "--type",
            "Mine",
            "--data",
            "{}",
        ],
        &[],
    );
    let clash = run(
        d,
        &["--data-dir", "other", "import", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(clash.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&clash.stderr).contains("already holds event"));
}

#[test]
fn an_interrupted_export_resumes() {
    let dir = scratch();
    let d = dir.path();
    fill_local(d, 10);
    let full = ok(d, &["--data-dir", "source", "export"], &[]);
    let file = d.join("export.ndjson");
    // The first 12 lines and part of the 13th, as a killed export leaves them.
    let cut = full.match_indices('\n').nth(11).unwrap().0 + 1 + 25;
    std::fs::write(&file, &full[..cut]).unwrap();
    let o = run(
        d,
        &[
            "--data-dir",
            "source",
            "export",
            "--output",
            file.to_str().unwrap(),
            "--resume",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), full);
}

#[test]
fn https_server_with_a_trusted_certificate() {
    let dir = scratch();
    let d = dir.path();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key): (PathBuf, PathBuf) = (d.join("cert.pem"), d.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = Server::start(
        d,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let url = server.url.replace("127.0.0.1", "localhost");
    let env = [
        ("FOLDSTORE_SERVER", url.as_str()),
        ("FOLDSTORE_CA_CERT", cert.to_str().unwrap()),
    ];
    ok(
        d,
        &["append", "account-1", "--type", "Opened", "--data", "{}"],
        &env,
    );
    assert_eq!(lines(&ok(d, &["read", "account-1"], &env)).len(), 1);
    // Without trusting the certificate, the CLI refuses the connection.
    let untrusted = run(d, &["--server", &url, "read", "account-1"], &[]);
    assert_eq!(untrusted.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&untrusted.stderr).contains("could not talk to the server"));
}

#[test]
fn serve_refuses_a_public_address_without_tokens_or_tls_pairs() {
    let dir = scratch();
    let d = dir.path();
    let o = run(d, &["serve", "--bind", "0.0.0.0", "--port", "0"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tokens-file"));
    let o = run(d, &["serve", "--tls-cert", "x.pem"], &[]);
    assert_eq!(o.status.code(), Some(2), "--tls-cert needs --tls-key");
    let bad = d.join("tokens.txt");
    std::fs::File::create(&bad)
        .unwrap()
        .write_all(b"oops\n")
        .unwrap();
    let o = run(
        d,
        &[
            "serve",
            "--port",
            "0",
            "--tokens-file",
            bad.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("tokens file line 1"));
}
