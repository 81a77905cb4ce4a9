//! The DCB design: no account streams and no saga. A transfer reads a decision model
//! built from the events tagged with either account, decides with the same account
//! decider, and appends the debit (tagged `account:<from>`) and the credit (tagged
//! `account:<to>`) in one append, on condition that no event tagged with either account
//! was stored after the position the model read. A lost race re-reads and decides again.
//!
//! Events go into small streams that only group them: `transfer-<id>` (so a retried
//! transfer is an idempotent append), `opening-<n>` and `freezing-<n>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use foldstore_core::dcb::{AppendCondition, Query, QueryItem, ReadQueryOptions};
use foldstore_core::{
    AppendError, EventStore, ExpectedRevision, Metadata, NewEvent, Position, ReadError, StreamName,
};

use uuid::Uuid;

use crate::account::{Account, AccountCommand, AccountError, AccountEvent, AccountId};
use crate::handler::backoff;
use crate::ids;
use crate::transfer::{self, Outcome, TransferEvent, TransferRequest};

/// Why a DCB command was not carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DcbError {
    /// The account refused it; nothing was written.
    #[error("refused: {0}")]
    Rejected(#[from] AccountError),
    /// Reading the decision model failed.
    #[error("could not read the decision model: {0}")]
    Read(#[from] ReadError),
    /// The append failed for a reason other than a lost race.
    #[error("could not append: {0}")]
    Append(#[from] AppendError),
    /// Other writers won every attempt.
    #[error("{attempts} attempts all lost to concurrent writers: retry later")]
    TooManyConflicts {
        /// How many attempts were made.
        attempts: u32,
    },
}

/// The bank, DCB style.
#[derive(Clone)]
pub struct DcbBank {
    store: Arc<dyn EventStore>,
    max_attempts: u32,
    conflicts: Arc<AtomicU64>,
}

/// A decision model: the accounts a query covers, and the position it was read at.
struct Model {
    accounts: Vec<Account>,
    after: Option<Position>,
}

impl DcbBank {
    /// A bank over `store`; each command is tried at most 200 times.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            max_attempts: 200,
            conflicts: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many conditional appends lost a race and were retried, so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// The query covering `accounts`: every event tagged with any of them.
    pub fn query(accounts: &[AccountId]) -> Query {
        Query::from_items(accounts.iter().map(|a| QueryItem::new().tags([a.tag()])))
    }

    /// Reads the decision model for `accounts`.
    async fn model(&self, accounts: &[AccountId]) -> Result<Model, ReadError> {
        // The head is read first: every event at or below it is visible to the query
        // read that follows, so nothing matching can hide at or below `after`.
        let head = self.store.head_position().await?;
        let events = self
            .store
            .read_query(&Self::query(accounts), ReadQueryOptions::new())
            .await?;
        let last = events.last().map(|e| e.position);
        let mut states: Vec<Account> = accounts.iter().map(|a| Account::initial(*a)).collect();
        for event in events.iter().filter_map(AccountEvent::from_recorded) {
            if let Some(i) = accounts.iter().position(|a| *a == event.account()) {
                let state = std::mem::replace(&mut states[i], Account::initial(accounts[i]));
                states[i] = state.evolve(&event);
            }
        }
        Ok(Model {
            accounts: states,
            after: head.max(last),
        })
    }

    /// Decides `decide` on the model of `accounts` and appends its events to `stream`
    /// (followed by `outcome`) under the model's condition, retrying lost races. Event ids derive from `parent`
    /// and each event's step name. Returns the events appended (none when the decision
    /// made none).
    async fn run<F>(
        &self,
        accounts: &[AccountId],
        stream: &StreamName,
        parent: Uuid,
        outcome: Option<TransferEvent>,
        decide: F,
    ) -> Result<Vec<AccountEvent>, DcbError>
    where
        F: Fn(&[Account]) -> Result<Vec<(AccountEvent, &'static str)>, AccountError>,
    {
        for attempt in 0..self.max_attempts {
            let model = self.model(accounts).await?;
            let decided = decide(&model.accounts)?;
            if decided.is_empty() {
                return Ok(vec![]);
            }
            let metadata = Metadata::new().with_correlation_id(parent);
            let mut new: Vec<NewEvent> = decided
                .iter()
                .map(|(e, step)| {
                    e.to_new_event()
                        .with_id(ids::derive(parent, step))
                        .with_tags([e.account().tag()])
                        .with_metadata(metadata.clone())
                })
                .collect();
            if let Some(outcome) = &outcome {
                new.push(
                    outcome
                        .to_new_event()
                        .with_id(ids::derive(parent, outcome.event_type()))
                        .with_metadata(metadata.clone()),
                );
            }
            let condition = AppendCondition::new(Self::query(accounts), model.after);
            match self
                .store
                .append_if(stream, ExpectedRevision::Any, new, condition)
                .await
            {
                Ok(_) => return Ok(decided.into_iter().map(|(e, _)| e).collect()),
                Err(AppendError::ConditionFailed { .. }) => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    backoff(attempt).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(DcbError::TooManyConflicts {
            attempts: self.max_attempts,
        })
    }

    /// Opens `account` with `balance`; fails if it was opened before.
    pub async fn open(&self, account: AccountId, balance: u64) -> Result<(), DcbError> {
        let stream = StreamName::new(format!("opening-{}", account.0)).expect("valid name");
        let parent = Uuid::from_u128(u128::from(account.0));
        self.run(&[account], &stream, parent, None, |s| {
            let events = s[0].decide(&AccountCommand::Open { balance })?;
            Ok(events.into_iter().map(|e| (e, "opened")).collect())
        })
        .await?;
        Ok(())
    }

    /// Freezes `account`.
    pub async fn freeze(&self, account: AccountId) -> Result<(), DcbError> {
        let stream = StreamName::new(format!("freezing-{}", account.0)).expect("valid name");
        let parent = Uuid::from_u128(u128::from(account.0));
        self.run(&[account], &stream, parent, None, |s| {
            let events = s[0].decide(&AccountCommand::Freeze)?;
            Ok(events.into_iter().map(|e| (e, "frozen")).collect())
        })
        .await?;
        Ok(())
    }

    /// Moves money in one conditional append (the debit, the credit and
    /// `TransferCompleted`), or records `TransferFailed` when an
    /// account refuses (nothing moves then).
    pub async fn transfer(&self, request: &TransferRequest) -> Result<Outcome, DcbError> {
        let id = request.id;
        let stream = transfer::stream(id);
        let accounts = [request.from, request.to];
        let moved = self
            .run(
                &accounts,
                &stream,
                id,
                Some(TransferEvent::TransferCompleted { id }),
                |s| {
                    let debit = s[0].decide(&AccountCommand::Debit {
                        amount: request.amount,
                        transfer: id,
                    })?;
                    let credit = s[1].decide(&AccountCommand::Credit {
                        amount: request.amount,
                        transfer: id,
                    })?;
                    let debit = debit.into_iter().map(|e| (e, "debit"));
                    Ok(debit
                        .chain(credit.into_iter().map(|e| (e, "credit")))
                        .collect())
                },
            )
            .await;
        match moved {
            Ok(_) => Ok(Outcome::Completed),
            Err(DcbError::Rejected(reason)) => {
                let failed = TransferEvent::TransferFailed {
                    id,
                    reason: reason.to_string(),
                }
                .to_new_event()
                .with_id(ids::derive(id, "failed"))
                .with_metadata(Metadata::new().with_correlation_id(id));
                self.store
                    .append(&stream, ExpectedRevision::NoStream, vec![failed])
                    .await?;
                Ok(Outcome::Failed)
            }
            Err(e) => Err(e),
        }
    }
}
