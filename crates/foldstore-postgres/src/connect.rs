//! The first connection of [`crate::PostgresStore::connect`], and why it failed: a
//! [`ConnectError`] that names the server, role or database at fault and says what to
//! do, instead of the client library's "error connecting to server".

use std::error::Error as _;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::{DbError, SqlState};
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Config, Connection, NoTls, Socket};

use crate::error::ConnectError;

/// The user named in messages when the URL names none.
const OS_USER: &str = "(your operating-system user)";

/// What a connection was made to, for messages.
#[derive(Debug)]
struct Target {
    /// `host:port` (or socket path) of every address tried, comma-separated.
    server: String,
    /// The TCP host names the client resolves (none when `hostaddr` is given).
    names: Vec<String>,
    /// The role, when the URL names one.
    user: Option<String>,
    /// The database, when the URL names one.
    database: Option<String>,
}

impl Target {
    fn of(config: &Config) -> Self {
        let ports = config.get_ports();
        let port = |i: usize| match ports {
            [] => 5432,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(5432),
        };
        let mut servers = Vec::new();
        let mut names = Vec::new();
        for (i, host) in config.get_hosts().iter().enumerate() {
            let address = config.get_hostaddrs().get(i);
            match (host, address) {
                (_, Some(ip)) => servers.push(tcp(&ip.to_string(), port(i))),
                (Host::Tcp(name), None) => {
                    servers.push(tcp(name, port(i)));
                    if name.parse::<IpAddr>().is_err() {
                        names.push(name.clone());
                    }
                }
                #[cfg(unix)]
                (Host::Unix(dir), None) => {
                    servers.push(format!("{}/.s.PGSQL.{}", dir.display(), port(i)))
                }
            }
        }
        if config.get_hosts().is_empty() {
            for (i, ip) in config.get_hostaddrs().iter().enumerate() {
                servers.push(tcp(&ip.to_string(), port(i)));
            }
        }
        Self {
            server: servers.join(", "),
            names,
            user: config.get_user().map(str::to_owned),
            database: config.get_dbname().map(str::to_owned),
        }
    }
}

/// `host:port`, with an IPv6 address in brackets.
fn tcp(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Opens one connection with `config`, giving up after `timeout` (the client library's
/// own timeout covers only the TCP handshake, not a server that accepts and then stays
/// silent).
pub(crate) async fn connect(
    config: &Config,
    timeout: Duration,
) -> Result<(Client, Connection<Socket, NoTlsStream>), ConnectError> {
    if config.get_ssl_mode() == SslMode::Require {
        return Err(ConnectError::TlsNotSupported);
    }
    match tokio::time::timeout(timeout, config.connect(NoTls)).await {
        Ok(Ok(connected)) => Ok(connected),
        Ok(Err(e)) => Err(explain(&e, Target::of(config), timeout).await),
        Err(_) => Err(ConnectError::Timeout {
            server: Target::of(config).server,
            after: timeout,
        }),
    }
}

/// The [`ConnectError`] for a failed connection attempt.
async fn explain(e: &tokio_postgres::Error, target: Target, timeout: Duration) -> ConnectError {
    if let Some(db) = e.as_db_error() {
        return refused(db, target);
    }
    let Target { server, user, .. } = &target;
    let user = user.clone().unwrap_or_else(|| OS_USER.to_owned());
    let source = e.source();
    if let Some(io) = source.and_then(|s| s.downcast_ref::<io::Error>()) {
        return match io.kind() {
            io::ErrorKind::ConnectionRefused => ConnectError::ConnectionRefused {
                server: target.server,
            },
            io::ErrorKind::TimedOut => ConnectError::Timeout {
                server: target.server,
                after: timeout,
            },
            _ => match unresolved(&target.names).await {
                Some((host, reason)) => ConnectError::UnknownHost { host, reason },
                None => ConnectError::Unreachable {
                    server: target.server,
                    reason: io.to_string(),
                },
            },
        };
    }
    let cause = source.map(ToString::to_string).unwrap_or_default();
    // The client library's authentication failures have no kind of their own to test:
    // its messages are what tells them apart.
    if cause == "password missing" {
        return ConnectError::PasswordMissing {
            user,
            server: server.clone(),
        };
    }
    if e.to_string() == "authentication error" {
        return ConnectError::AuthMethodUnsupported {
            user,
            server: server.clone(),
            reason: cause,
        };
    }
    ConnectError::Connect {
        server: target.server,
        reason: chain(e),
    }
}

/// The first of `names` that does not resolve, with the resolver's error.
async fn unresolved(names: &[String]) -> Option<(String, String)> {
    for name in names {
        if let Err(e) = tokio::net::lookup_host((name.as_str(), 0)).await {
            return Some((name.clone(), e.to_string()));
        }
    }
    None
}

/// The [`ConnectError`] for an error the server answered the start-up message with.
fn refused(db: &DbError, target: Target) -> ConnectError {
    let Target {
        server,
        user,
        database,
        ..
    } = target;
    let message = db.message().to_owned();
    let code = db.code();
    // Without a user in the URL the client logs in as the operating-system user, and
    // the database defaults to the user's name; the server's message names them.
    if *code == SqlState::INVALID_CATALOG_NAME {
        return ConnectError::DatabaseMissing {
            database: database
                .or_else(|| quoted(&message))
                .or(user)
                .unwrap_or_else(|| OS_USER.to_owned()),
            server,
        };
    }
    let user = user
        .or_else(|| quoted(&message))
        .unwrap_or_else(|| OS_USER.to_owned());
    let database = || database.clone().unwrap_or_else(|| user.clone());
    if *code == SqlState::INVALID_PASSWORD {
        return ConnectError::PasswordRejected {
            user: user.clone(),
            server,
        };
    }
    if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
        // One SQLSTATE for a missing role, a role without LOGIN and a pg_hba.conf
        // refusal: the server's (English) message tells them apart; in another
        // language the refusal is reported with the server's own words. (A refusal's
        // "no encryption" cannot tell a server that requires TLS from one with no
        // matching line at all: every foldstore connection is unencrypted.)
        return if message.contains("does not exist") {
            ConnectError::RoleMissing {
                user: user.clone(),
                server,
            }
        } else if message.contains("not permitted to log in") {
            ConnectError::LoginNotAllowed {
                user: user.clone(),
                server,
            }
        } else {
            ConnectError::AccessDenied {
                user: user.clone(),
                database: database(),
                server,
                message,
            }
        };
    }
    if *code == SqlState::TOO_MANY_CONNECTIONS {
        return ConnectError::TooManyConnections { server, message };
    }
    if *code == SqlState::CANNOT_CONNECT_NOW {
        return ConnectError::ServerNotReady { server, message };
    }
    ConnectError::Connect {
        server,
        reason: format!("{message} (SQLSTATE {})", code.code()),
    }
}

/// The first `"..."`-quoted word of a server message.
fn quoted(message: &str) -> Option<String> {
    let (_, rest) = message.split_once('"')?;
    let (word, _) = rest.split_once('"')?;
    Some(word.to_owned())
}

/// An error and its causes, `: `-separated.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_every_address() {
        let config: Config = "postgres://app@db.internal:6000/events".parse().unwrap();
        let target = Target::of(&config);
        assert_eq!(target.server, "db.internal:6000");
        assert_eq!(target.names, ["db.internal"]);
        assert_eq!(target.user.as_deref(), Some("app"));
        assert_eq!(target.database.as_deref(), Some("events"));

        let config: Config = "host=a,::1 port=5432,5433 user=u".parse().unwrap();
        let target = Target::of(&config);
        assert_eq!(target.server, "a:5432, [::1]:5433");
        assert_eq!(target.names, ["a"]);
        assert_eq!(target.database, None);
    }

    #[test]
    fn quoted_names_come_from_server_messages() {
        assert_eq!(
            quoted("role \"ghost\" does not exist").as_deref(),
            Some("ghost")
        );
        assert_eq!(quoted("no quotes"), None);
    }
}
