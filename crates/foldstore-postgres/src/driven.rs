//! Reader connections that the reading task drives itself.
//!
//! On a pooled connection, `tokio-postgres` runs the connection in a task of its own,
//! which hands each read of the socket (at most 8 KiB of rows) to the querying task
//! through a channel of one slot: a 1,000-event page is some forty hand-offs, most of
//! them between worker threads. A reader here has no task of its own: the read polls
//! the query and the connection together, so the hand-offs stay inside one task.
//! Global-order pages and DCB query reads run on it; in interleaved `bench read-all`
//! runs on PostgreSQL, pages went from a median 0.76 of the raw read to 0.95
//! (docs/benchmarks.md, stop 13).
//!
//! A reader only makes reads faster; it never decides how they fail. A read that finds
//! every reader busy, or whose reader cannot connect or loses its connection, runs on
//! the pool instead, so errors, timeouts and recovery stay the pool's. Only an error
//! PostgreSQL itself returns for the statement (a timeout, say) is the read's answer,
//! as it would be on the pool. Nothing polls an idle reader: a connection the server
//! closed meanwhile shows at the next read, which then goes to the pool, and the
//! reader connects again on a later one. A reader that cannot connect delays that one
//! read by at most the connect timeout (at once when the server refuses), and the
//! readers then leave reads to the pool for a second.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, Connection, NoTls, Row, Socket};

/// Reader connections per store, opened on first use, beyond the pool's.
const READERS: usize = 2;

/// After a reader could not connect, reads go to the pool this long before a reader
/// tries again (so that a server that is down costs no connect attempt per read).
const CONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// One connection and its client; the connection is polled only while reading.
struct Reader {
    client: Client,
    connection: Connection<Socket, NoTlsStream>,
}

/// The store's reader connections.
pub(crate) struct Readers {
    slots: Vec<Mutex<Option<Reader>>>,
    /// No reader connects before this instant.
    backoff_until: std::sync::Mutex<Option<Instant>>,
}

/// What a read on a reader came to.
pub(crate) enum Outcome {
    /// The rows of the statement.
    Rows(Vec<Row>),
    /// PostgreSQL refused the statement: the read's answer, as on the pool.
    Refused(tokio_postgres::Error),
    /// No reader was free or usable: the caller runs the read on the pool.
    UsePool,
}

/// How a read on a reader failed.
enum Failure {
    /// The statement's own error.
    Query(tokio_postgres::Error),
    /// The connection ended, with or without an error of its own.
    Connection,
}

impl Readers {
    pub(crate) fn new() -> Self {
        Self {
            slots: (0..READERS).map(|_| Mutex::new(None)).collect(),
            backoff_until: std::sync::Mutex::new(None),
        }
    }

    /// Runs `sql` on a free reader, connecting it first with `config` if needed.
    pub(crate) async fn query(
        &self,
        config: &Config,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Outcome {
        let Some(mut slot) = self.free_slot() else {
            return Outcome::UsePool;
        };
        // The reader is taken out of its slot while it reads and put back only when the
        // read ends cleanly. A read abandoned midway (its future dropped) drops the
        // reader with it: the connection closes and the server stops the statement,
        // instead of a backend blocked mid-send, holding its locks, until the next read
        // on this slot.
        let mut reader = match slot.take() {
            Some(reader) => reader,
            None if self.backing_off() => return Outcome::UsePool,
            None => match config.connect(NoTls).await {
                Ok((client, connection)) => Reader { client, connection },
                Err(e) => {
                    tracing::debug!(error = %e, "foldstore: a reader connection failed; reading on the pool");
                    self.back_off();
                    return Outcome::UsePool;
                }
            },
        };
        match run(&mut reader, sql, params).await {
            Ok(rows) => {
                *slot = Some(reader);
                Outcome::Rows(rows)
            }
            Err(Failure::Query(e)) if e.as_db_error().is_some() => {
                // A fatal error (the server shutting down) also ends the connection.
                if !reader.client.is_closed() {
                    *slot = Some(reader);
                }
                Outcome::Refused(e)
            }
            Err(_) => Outcome::UsePool,
        }
    }

    fn free_slot(&self) -> Option<MutexGuard<'_, Option<Reader>>> {
        self.slots.iter().find_map(|slot| slot.try_lock().ok())
    }

    fn backing_off(&self) -> bool {
        let until = self.backoff_until.lock().unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    fn back_off(&self) {
        let mut until = self.backoff_until.lock().unwrap_or_else(|e| e.into_inner());
        *until = Some(Instant::now() + CONNECT_BACKOFF);
    }
}

/// Polls the statement and its connection together until the statement is answered.
async fn run(
    reader: &mut Reader,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<Vec<Row>, Failure> {
    let Reader { client, connection } = reader;
    let mut query = std::pin::pin!(client.query_typed(sql, params));
    std::future::poll_fn(|cx| {
        // The statement first, so that its request is queued before the connection
        // writes; then the connection, which may answer it; then the statement again.
        if let Poll::Ready(r) = query.as_mut().poll(cx) {
            return Poll::Ready(r.map_err(Failure::Query));
        }
        match Pin::new(&mut *connection).poll(cx) {
            Poll::Ready(_) => Poll::Ready(Err(Failure::Connection)),
            Poll::Pending => query.as_mut().poll(cx).map(|r| r.map_err(Failure::Query)),
        }
    })
    .await
}
