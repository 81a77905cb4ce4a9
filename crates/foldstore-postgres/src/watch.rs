//! Live delivery across processes: a poller per store, with NOTIFY only as a hint.
//!
//! The poller reads the visible head of the global order (and a counter that deletes,
//! tombstones and metadata changes bump) and calls `CommitNotifier::notify` when either
//! moves, which wakes this process's subscriptions. It polls every `poll_interval`
//! while things change and doubles its pause up to `idle_poll_interval` when they do
//! not. This store's own commits, and `NOTIFY` hints from other processes (received on
//! one `LISTEN` connection), wake it at once.
//!
//! No append transaction notifies: PostgreSQL serializes the commits of every
//! transaction that sent a `NOTIFY` (a database-wide lock in `PreCommit_Notify`). The
//! hint is sent after commit, in a statement of its own, at most once per poll
//! interval however many appends committed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::poll_fn;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::pg::Xid8;
use crate::store::Shared;

/// What the poller watches: the visible head `(tx, seq)` and the change counter.
type Watched = (Option<(Xid8, i64)>, i64);

/// The poller task: runs until the store is dropped (it is aborted then).
pub(crate) async fn poller(shared: Arc<Shared>) {
    let fast = shared.options.poll_interval.max(Duration::from_millis(1));
    let idle = shared.options.idle_poll_interval.max(fast);
    let mut pause = Duration::ZERO;
    let mut last: Option<Watched> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shared.poke.notified() => pause = fast,
        }
        match poll_once(&shared).await {
            Ok(now) => {
                if last != Some(now) {
                    last = Some(now);
                    shared.commits.notify();
                    pause = fast;
                } else {
                    pause = (pause * 2).clamp(fast, idle);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "foldstore poller: read failed; retrying");
                pause = (pause * 2).clamp(Duration::from_millis(20), Duration::from_secs(1));
            }
        }
    }
}

async fn poll_once(shared: &Shared) -> Result<Watched, foldstore_core::BackendError> {
    let conn = shared.pool.get().await.map_err(crate::error::pool)?;
    let stmt = conn
        .prepare_cached(&shared.sql.poll)
        .await
        .map_err(|e| crate::error::backend(e, crate::error::Effect::None))?;
    let row = conn
        .query_one(&stmt, &[])
        .await
        .map_err(|e| crate::error::backend(e, crate::error::Effect::None))?;
    let decode = |e| {
        foldstore_core::BackendError::new(
            foldstore_core::BackendErrorKind::Incompatible,
            "the poller's row could not be read",
        )
        .with_source(e)
    };
    let xmin: Xid8 = row.try_get(0).map_err(decode)?;
    let tx: Option<Xid8> = row.try_get(1).map_err(decode)?;
    let seq: Option<i64> = row.try_get(2).map_err(decode)?;
    let changes: i64 = row.try_get(3).map_err(decode)?;
    shared.known_xmin.fetch_max(xmin.0, Ordering::AcqRel);
    Ok((tx.zip(seq), changes))
}

/// The listener task: keeps one connection in `LISTEN` and pokes the poller on every
/// notification; reconnects with backoff when the connection drops.
pub(crate) async fn listener(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&shared).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::debug!(error = %e, "foldstore listener: connection failed; reconnecting")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        // Hints may have been missed while disconnected.
        shared.poke.notify_one();
    }
}

async fn listen_once(shared: &Shared) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = shared.pg_config.connect(NoTls).await?;
    let driver = async {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => shared.poke.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    };
    tokio::pin!(driver);
    let listen = client.batch_execute(&shared.sql.listen);
    tokio::select! {
        ended = &mut driver => return ended,
        listening = listen => listening?,
    }
    shared.poke.notify_one();
    let ended = driver.await;
    drop(client);
    ended
}

/// The hint task: after commits, sends one `NOTIFY` (outside any append transaction),
/// at most once per poll interval.
pub(crate) async fn hinter(shared: Arc<Shared>) {
    let every = shared.options.poll_interval.max(Duration::from_millis(1));
    loop {
        shared.hint.notified().await;
        match shared.pool.get().await {
            Ok(conn) => {
                if let Err(e) = conn.batch_execute(&shared.sql.notify).await {
                    tracing::debug!(error = %e, "foldstore: commit hint not sent");
                }
            }
            Err(e) => tracing::debug!(error = %e, "foldstore: commit hint not sent"),
        }
        tokio::time::sleep(every).await;
    }
}
