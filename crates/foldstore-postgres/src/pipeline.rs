//! One group-commit transaction, pipelined: `BEGIN`, the statements and `COMMIT` sent
//! in one round trip, and what their answers mean. Both paths of the writer
//! ([`crate::batch`] and [`crate::writer`]) send their transactions through here.
//!
//! PostgreSQL turns the pipelined `COMMIT` of a transaction in which a statement
//! failed into a rollback, so a failed statement means nothing was written. A broken
//! connection, though, leaves the outcome unknown once `COMMIT` was sent.
//!
//! With the test hook `test_commit_delay`, `COMMIT` is not pipelined: it is sent after
//! a random pause once the statements answered, so that tests can hold transactions
//! open (out of sequence order) for a while.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use foldstore_core::{BackendError, BackendErrorKind};

use crate::error::{Effect, is_in_failed_transaction, is_transient_conflict};

/// One statement of a pipelined transaction, yielding `T` (`T::default()` for
/// statements without rows).
pub(crate) type Step<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, tokio_postgres::Error>> + Send + 'a>>;

/// How the statements of a transaction answered.
pub(crate) enum Sent<T> {
    /// Every statement succeeded: their outputs, in order (`BEGIN` first), and the
    /// commit still to [`finish`].
    Ran { outputs: Vec<T>, commit: Commit<T> },
    /// Statement `index` (counting `BEGIN` as 0) failed; the transaction rolled back.
    Failed {
        index: usize,
        error: tokio_postgres::Error,
    },
    /// The connection failed; `effect` says whether the transaction may have committed.
    Lost {
        error: tokio_postgres::Error,
        effect: Effect,
    },
}

/// The `COMMIT` of a transaction: already answered (pipelined), or still to send.
pub(crate) struct Commit<T>(Option<Result<T, tokio_postgres::Error>>);

/// Sends `BEGIN`, `statements` and (unless `delay` holds commits back) `COMMIT` in one
/// round trip, and sorts their answers.
pub(crate) async fn send<'a, T: Default + Send + 'a>(
    conn: &'a deadpool_postgres::Object,
    statements: Vec<Step<'a, T>>,
    delay: Option<Duration>,
) -> Sent<T> {
    let mut steps: Vec<Step<'a, T>> = Vec::with_capacity(statements.len() + 2);
    steps.push(Box::pin(async {
        conn.batch_execute("BEGIN").await.map(|()| T::default())
    }));
    steps.extend(statements);
    if delay.is_none() {
        steps.push(Box::pin(async {
            conn.batch_execute("COMMIT").await.map(|()| T::default())
        }));
    }
    let mut results = pipelined(steps).await;
    let commit = Commit(if delay.is_none() { results.pop() } else { None });

    // The connection broke: with COMMIT pipelined the transaction may have committed.
    if let Some(i) = results
        .iter()
        .position(|r| matches!(r, Err(e) if e.code().is_none()))
        && let Err(error) = results.remove(i)
    {
        let effect = if delay.is_none() {
            Effect::Unknown
        } else {
            Effect::None
        };
        return Sent::Lost { error, effect };
    }
    // A statement failed: the transaction rolled back. Find the statement that failed
    // first; those after it only say that the transaction had failed.
    if let Some(index) = results
        .iter()
        .position(|r| matches!(r, Err(e) if !is_in_failed_transaction(e)))
        && let Err(error) = results.remove(index)
    {
        if delay.is_some() {
            let _ = conn.batch_execute("ROLLBACK").await;
        }
        return Sent::Failed { index, error };
    }
    let outputs = results.into_iter().map(Result::unwrap_or_default).collect();
    Sent::Ran { outputs, commit }
}

/// Why a transaction's `COMMIT` did not succeed.
pub(crate) enum NotCommitted {
    /// A deadlock or serialization failure: nothing was written; run it again.
    Conflict(tokio_postgres::Error),
    /// The outcome is unknown (the connection broke, or the server failed the commit).
    Lost(tokio_postgres::Error),
}

/// The answer of `commit`: the pipelined one, or, when commits are held back, the
/// answer of a `COMMIT` sent now after a random pause.
pub(crate) async fn finish<T: Default>(
    conn: &deadpool_postgres::Object,
    commit: Commit<T>,
    delay: Option<Duration>,
) -> Result<(), NotCommitted> {
    let answer = match commit.0 {
        Some(answer) => answer.map(|_| ()),
        None => {
            if let Some(max) = delay {
                tokio::time::sleep(random_below(max)).await;
            }
            conn.batch_execute("COMMIT").await
        }
    };
    answer.map_err(|error| {
        if error.code().is_some() && is_transient_conflict(&error) {
            NotCommitted::Conflict(error)
        } else {
            NotCommitted::Lost(error)
        }
    })
}

/// A row of a transaction's answers could not be read: roll back if `COMMIT` has not
/// been sent yet; otherwise the transaction is written but its answers are unknown.
pub(crate) async fn unreadable(
    conn: &deadpool_postgres::Object,
    delay: Option<Duration>,
    e: BackendError,
) -> BackendError {
    if delay.is_some() {
        let _ = conn.batch_execute("ROLLBACK").await;
        return e;
    }
    BackendError::new(
        BackendErrorKind::OutcomeUnknown,
        format!("{e}; the batch was committed: retry with the same ids"),
    )
}

/// Runs `steps` pipelined: each is polled once, in order, which sends its messages
/// (tokio-postgres sends a request on its first poll); then they are awaited in order.
async fn pipelined<T>(mut steps: Vec<Step<'_, T>>) -> Vec<Result<T, tokio_postgres::Error>> {
    let mut ready: Vec<Option<Result<T, tokio_postgres::Error>>> =
        steps.iter().map(|_| None).collect();
    futures::future::poll_fn(|cx| {
        for (step, slot) in steps.iter_mut().zip(ready.iter_mut()) {
            if let Poll::Ready(out) = step.as_mut().poll(cx) {
                *slot = Some(out);
            }
        }
        Poll::Ready(())
    })
    .await;
    let mut out = Vec::with_capacity(steps.len());
    for (step, slot) in steps.into_iter().zip(ready) {
        out.push(match slot {
            Some(done) => done,
            None => step.await,
        });
    }
    out
}

/// A pseudo-random duration below `max` (test hook only; not for anything that needs
/// good randomness).
fn random_below(max: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(h.finish() % nanos)
}

static COUNTER: AtomicU64 = AtomicU64::new(0);
