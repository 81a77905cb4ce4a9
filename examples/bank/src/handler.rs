//! The command handler of the aggregate design: load an account stream, decide, append
//! with the `Exact` revision it read, and on a conflict read again and decide again.
//!
//! Event ids come from the command id, so a command handled twice appends nothing the
//! second time, and correlation and causation ids go into every event's metadata.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use foldstore_core::{
    AppendError, EventStore, ExpectedRevision, Metadata, ReadError, ReadStreamOptions,
};
use uuid::Uuid;

use crate::account::{Account, AccountCommand, AccountError, AccountEvent, AccountId};
use crate::ids;

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The account refused it; nothing was written.
    #[error("refused: {0}")]
    Rejected(#[from] AccountError),
    /// Reading the account failed.
    #[error("could not load the account: {0}")]
    Read(#[from] ReadError),
    /// Appending failed for a reason other than a conflict.
    #[error("could not append: {0}")]
    Append(#[from] AppendError),
    /// Other writers won every attempt.
    #[error(
        "{account}: {attempts} attempts all lost to concurrent writers: retry later or raise the attempt limit"
    )]
    TooManyConflicts {
        /// The account.
        account: AccountId,
        /// How many attempts were made.
        attempts: u32,
    },
}

/// Handles account commands against a store, retrying on conflicts.
#[derive(Clone)]
pub struct AccountHandler {
    store: Arc<dyn EventStore>,
    max_attempts: u32,
    conflicts: Arc<AtomicU64>,
}

impl AccountHandler {
    /// A handler that tries each command at most 200 times.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            max_attempts: 200,
            conflicts: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many appends lost to a concurrent writer and were retried, so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// Loads `account`'s state and the revision to expect on the next append.
    pub async fn load(&self, account: AccountId) -> Result<(Account, ExpectedRevision), ReadError> {
        let stream = account.stream();
        match self
            .store
            .read_stream(&stream, ReadStreamOptions::forwards())
            .await
        {
            Ok(events) => {
                let expected = events.last().map_or(ExpectedRevision::NoStream, |e| {
                    ExpectedRevision::Exact(e.revision)
                });
                let state = events
                    .iter()
                    .filter_map(AccountEvent::from_recorded)
                    .fold(Account::initial(account), |s, e| s.evolve(&e));
                Ok((state, expected))
            }
            Err(ReadError::StreamNotFound { .. }) => {
                Ok((Account::initial(account), ExpectedRevision::NoStream))
            }
            Err(e) => Err(e),
        }
    }

    /// Carries out `command` on `account`: returns the events it appended (none when the
    /// command had already been carried out).
    ///
    /// `command_id` must be the same each time the same command is sent: the events'
    /// ids derive from it. `correlation` is copied into the events' metadata.
    pub async fn handle(
        &self,
        account: AccountId,
        command: &AccountCommand,
        command_id: Uuid,
        correlation: Uuid,
    ) -> Result<Vec<AccountEvent>, HandleError> {
        let stream = account.stream();
        for attempt in 0..self.max_attempts {
            let (state, expected) = self.load(account).await?;
            let events = state.decide(command)?;
            if events.is_empty() {
                return Ok(events);
            }
            let metadata = Metadata::new()
                .with_correlation_id(correlation)
                .with_causation_id(command_id);
            let new = events
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    e.to_new_event()
                        .with_id(ids::derive(command_id, &i.to_string()))
                        .with_metadata(metadata.clone())
                })
                .collect();
            match self.store.append(&stream, expected, new).await {
                Ok(_) => return Ok(events),
                Err(AppendError::WrongExpectedRevision { .. }) => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    backoff(attempt).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(HandleError::TooManyConflicts {
            account,
            attempts: self.max_attempts,
        })
    }
}

/// Waits a little longer after each lost attempt (yield first, then up to 8 ms, with
/// jitter so that the losers do not collide again in step).
pub(crate) async fn backoff(attempt: u32) {
    if attempt < 2 {
        tokio::task::yield_now().await;
        return;
    }
    let cap_us = 250u64 << attempt.min(5);
    let us = rand::random_range(cap_us / 2..=cap_us);
    tokio::time::sleep(Duration::from_micros(us)).await;
}
