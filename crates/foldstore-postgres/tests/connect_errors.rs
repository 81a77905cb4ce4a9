//! Why connecting failed, told so that an operator can fix it.
//!
//! Guards against start-up errors that hide their cause: a missing database or role
//! reported as an internal error with a bare SQLSTATE, an unreachable server reported
//! without saying refused, unknown host or timeout, a server that accepts the
//! connection and never answers hanging the start-up forever, and a message that
//! repeats itself. Some cases need the test server (`FOLDSTORE_TEST_POSTGRES_URL`);
//! the authentication and server-state cases run against a stand-in that answers the
//! start-up message the way PostgreSQL does.

mod common;

use std::time::{Duration, Instant};

use foldstore_postgres::{ConnectError, PostgresOptions, PostgresStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_postgres::config::Host;

/// Connects with a short timeout, failing the test (instead of hanging) if connecting
/// takes far longer than that.
async fn connect_err(url: &str) -> ConnectError {
    let options = PostgresOptions::new(url).connect_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), PostgresStore::connect(options))
        .await
        .unwrap_or_else(|_| panic!("connecting to {url} hung for 20 s"));
    let e = result.expect_err("connecting should fail");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    e
}

/// The message says `needle` exactly once, and is not an internal error.
fn says_once(e: &ConnectError, needle: &str) {
    let message = e.to_string();
    assert_eq!(
        message.matches(needle).count(),
        1,
        "{needle:?} should appear once in: {message}"
    );
    assert!(!message.contains("internal error"), "{message}");
    assert!(!message.contains("please report"), "{message}");
}

/// The test server's URL as key-value settings, with another user or database.
fn with(url: &str, user: Option<&str>, database: Option<&str>) -> String {
    let config: tokio_postgres::Config = url.parse().expect("the test URL parses");
    let mut parts = Vec::new();
    for host in config.get_hosts() {
        match host {
            Host::Tcp(name) => parts.push(format!("host={name}")),
            #[cfg(unix)]
            Host::Unix(dir) => parts.push(format!("host={}", dir.display())),
        }
    }
    if let Some(port) = config.get_ports().first() {
        parts.push(format!("port={port}"));
    }
    if let Some(user) = user.or(config.get_user()) {
        parts.push(format!("user={user}"));
    }
    if let Some(password) = config.get_password() {
        parts.push(format!("password={}", String::from_utf8_lossy(password)));
    }
    if let Some(database) = database.or(config.get_dbname()) {
        parts.push(format!("dbname={database}"));
    }
    parts.join(" ")
}

/// `host:port` of the test server.
fn server_of(url: &str) -> String {
    let config: tokio_postgres::Config = url.parse().expect("the test URL parses");
    let host = match &config.get_hosts()[0] {
        Host::Tcp(name) => name.clone(),
        #[cfg(unix)]
        Host::Unix(dir) => return format!("{}/.s.PGSQL.", dir.display()),
    };
    format!(
        "{host}:{}",
        config.get_ports().first().copied().unwrap_or(5432)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_is_named_with_how_to_create_it() {
    let Some(url) = common::test_url("a_missing_database_is_named_with_how_to_create_it") else {
        return;
    };
    let database = format!("foldstore_missing_{}", &common::fresh_schema()[15..]);
    let e = connect_err(&with(&url, None, Some(&database))).await;
    assert!(
        matches!(&e, ConnectError::DatabaseMissing { database: d, server }
            if *d == database && server.starts_with(&server_of(&url))),
        "{e:?}"
    );
    says_once(&e, &format!("database {database:?} does not exist"));
    says_once(&e, &format!("createdb {database}"));
    says_once(&e, &format!("CREATE DATABASE \"{database}\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_role_is_named_with_how_to_create_it() {
    let Some(url) = common::test_url("a_missing_role_is_named_with_how_to_create_it") else {
        return;
    };
    let role = format!("foldstore_ghost_{}", &common::fresh_schema()[15..]);
    let e = connect_err(&with(&url, Some(&role), None)).await;
    assert!(
        matches!(&e, ConnectError::RoleMissing { user, .. } if *user == role),
        "{e:?}"
    );
    says_once(&e, &format!("role {role:?} does not exist"));
    says_once(&e, &format!("CREATE ROLE \"{role}\" LOGIN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_where_nothing_listens_is_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    let e = connect_err(&format!("postgres://app@127.0.0.1:{port}/events")).await;
    let server = format!("127.0.0.1:{port}");
    assert!(
        matches!(&e, ConnectError::ConnectionRefused { server: s } if *s == server),
        "{e:?}"
    );
    says_once(&e, &server);
    says_once(&e, "connection refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_host_is_named() {
    let e = connect_err("postgres://app@nonexistent.invalid:5432/events").await;
    assert!(
        matches!(&e, ConnectError::UnknownHost { host, .. } if host == "nonexistent.invalid"),
        "{e:?}"
    );
    says_once(&e, "\"nonexistent.invalid\" does not resolve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out() {
    // The kernel completes the TCP handshake for a listener that never accepts: the
    // client's start-up message then goes unanswered.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().expect("address").to_string();
    let e = connect_err(&format!("postgres://app@{server}/events")).await;
    assert!(
        matches!(&e, ConnectError::Timeout { server: s, after }
            if *s == server && *after == Duration::from_millis(500)),
        "{e:?}"
    );
    says_once(&e, &server);
    says_once(&e, "no answer within 500ms");
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_asking_for_tls_is_told_there_is_none() {
    let e = connect_err("postgres://app@127.0.0.1:5432/events?sslmode=require").await;
    assert!(matches!(e, ConnectError::TlsNotSupported), "{e:?}");
    says_once(&e, "sslmode=require");
}

/// A stand-in server that reads one start-up message and answers `reply`.
async fn stand_in(reply: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let len = socket.read_i32().await.expect("start-up length");
        let mut body = vec![0; usize::try_from(len - 4).expect("a length")];
        socket.read_exact(&mut body).await.expect("start-up body");
        socket.write_all(&reply).await.expect("reply");
        // Keep the socket open until the client gives up.
        let _ = socket.read(&mut [0; 64]).await;
    });
    address
}

/// A PostgreSQL `ErrorResponse` with severity FATAL.
fn fatal(code: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    message_of(b'E', &fields)
}

/// A backend message of `tag` with `body`.
fn message_of(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(i32::try_from(body.len()).expect("a length") + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_says_so() {
    let server = stand_in(fatal(
        "28P01",
        "password authentication failed for user \"app\"",
    ))
    .await;
    let e = connect_err(&format!("postgres://app:wrong@{server}/events")).await;
    assert!(
        matches!(&e, ConnectError::PasswordRejected { user, server: s } if user == "app" && *s == server),
        "{e:?}"
    );
    says_once(&e, "rejected the password of user \"app\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_the_url_lacks_is_asked_for() {
    // AuthenticationCleartextPassword.
    let server = stand_in(message_of(b'R', &3i32.to_be_bytes())).await;
    let e = connect_err(&format!("postgres://app@{server}/events")).await;
    assert!(
        matches!(&e, ConnectError::PasswordMissing { user, .. } if user == "app"),
        "{e:?}"
    );
    says_once(&e, "the URL has none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_authentication_method_is_named() {
    // AuthenticationGSS.
    let server = stand_in(message_of(b'R', &7i32.to_be_bytes())).await;
    let e = connect_err(&format!("postgres://app@{server}/events")).await;
    assert!(
        matches!(&e, ConnectError::AuthMethodUnsupported { user, .. } if user == "app"),
        "{e:?}"
    );
    says_once(&e, "pg_hba.conf");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_hba_refusal_quotes_the_server() {
    let refusal = "no pg_hba.conf entry for host \"10.0.0.7\", user \"app\", database \"events\", no encryption";
    let server = stand_in(fatal("28000", refusal)).await;
    let e = connect_err(&format!("postgres://app@{server}/events")).await;
    assert!(
        matches!(&e, ConnectError::AccessDenied { user, database, message, .. }
            if user == "app" && database == "events" && message == refusal),
        "{e:?}"
    );
    says_once(&e, refusal);
    // The server may allow the user only over TLS, which foldstore does not speak.
    says_once(&e, "`hostssl` lines never match");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_connections_says_which_limit() {
    let server = stand_in(fatal("53300", "sorry, too many clients already")).await;
    let e = connect_err(&format!("postgres://app@{server}/events")).await;
    assert!(
        matches!(&e, ConnectError::TooManyConnections { server: s, .. } if *s == server),
        "{e:?}"
    );
    says_once(&e, "sorry, too many clients already");
    says_once(&e, "max_connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_starting_up_says_to_wait() {
    let server = stand_in(fatal("57P03", "the database system is starting up")).await;
    let e = connect_err(&format!("postgres://app@{server}/events")).await;
    assert!(
        matches!(&e, ConnectError::ServerNotReady { server: s, .. } if *s == server),
        "{e:?}"
    );
    says_once(&e, "the database system is starting up");
}
