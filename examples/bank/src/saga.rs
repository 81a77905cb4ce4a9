//! The aggregate design's transfer saga (process manager): it reacts to
//! `TransferRequested` by debiting the source, then crediting the target, and
//! compensates (refunds the source) when the target refuses.
//!
//! Its progress lives in the transfer stream itself (`TransferDebited`, then one
//! outcome), and every event it causes has an id derived from the transfer id and the
//! step, so reacting to the same request twice (after a restart, or a replay) appends
//! nothing new and ends in the same outcome.
//!
//! [`SagaWorkers`] runs the saga as a consumer group: member `m` of `n` follows the
//! transfer streams that hash to it, so `n` transfers run at once and their account
//! commands contend, which the command handler resolves by retrying.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use foldstore_core::{
    AppendError, ConsumerGroup, EventFilter, EventStore, ExpectedRevision, Metadata, ReadError,
    ReadStreamOptions, SubscribeFrom, SubscriptionError,
};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::account::AccountCommand;
use crate::handler::{AccountHandler, HandleError};
use crate::ids;
use crate::transfer::{self, Outcome, TransferEvent, TransferRequest};

/// Why the saga could not finish a step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// An account command failed for a reason other than a refusal.
    #[error("an account command failed: {0}")]
    Command(#[from] HandleError),
    /// The transfer stream could not be read.
    #[error("could not read the transfer stream: {0}")]
    Read(#[from] ReadError),
    /// The transfer stream could not be written.
    #[error("could not record the transfer's progress: {0}")]
    Append(#[from] AppendError),
    /// The subscription ended with an error.
    #[error("the saga's subscription failed: {0}")]
    Subscription(#[from] SubscriptionError),
}

/// The transfer saga.
#[derive(Clone)]
pub struct TransferSaga {
    store: Arc<dyn EventStore>,
    accounts: AccountHandler,
}

impl TransferSaga {
    /// A saga sending its commands through `accounts`.
    pub fn new(store: Arc<dyn EventStore>, accounts: AccountHandler) -> Self {
        Self { store, accounts }
    }

    /// Asks for a transfer: appends `TransferRequested` to its stream. Asking twice
    /// for the same transfer is an idempotent retry.
    pub async fn request(&self, request: TransferRequest) -> Result<(), AppendError> {
        let event = TransferEvent::TransferRequested(request)
            .to_new_event()
            .with_id(ids::derive(request.id, "requested"))
            .with_metadata(Metadata::new().with_correlation_id(request.id));
        self.store
            .append(
                &transfer::stream(request.id),
                ExpectedRevision::NoStream,
                vec![event],
            )
            .await?;
        Ok(())
    }

    /// Carries a requested transfer to its outcome, from wherever it stopped.
    pub async fn react(&self, request: &TransferRequest) -> Result<Outcome, SagaError> {
        let stream = transfer::stream(request.id);
        let events = self
            .store
            .read_stream(&stream, ReadStreamOptions::forwards())
            .await?;
        let mut revision = events.last().map_or(0, |e| e.revision);
        let mut debited = false;
        for e in events.iter().filter_map(TransferEvent::from_recorded) {
            match e {
                TransferEvent::TransferDebited { .. } => debited = true,
                TransferEvent::TransferCompleted { .. } => return Ok(Outcome::Completed),
                TransferEvent::TransferFailed { .. } => return Ok(Outcome::Failed),
                TransferEvent::TransferCompensated { .. } => return Ok(Outcome::Compensated),
                TransferEvent::TransferRequested(_) => {}
            }
        }
        let id = request.id;
        if !debited {
            let debit = AccountCommand::Debit {
                amount: request.amount,
                transfer: id,
            };
            match self
                .accounts
                .handle(request.from, &debit, ids::derive(id, "debit"), id)
                .await
            {
                Ok(_) => {}
                Err(HandleError::Rejected(reason)) => {
                    let failed = TransferEvent::TransferFailed {
                        id,
                        reason: reason.to_string(),
                    };
                    self.record(id, &mut revision, failed, "failed").await?;
                    return Ok(Outcome::Failed);
                }
                Err(e) => return Err(e.into()),
            }
            self.record(
                id,
                &mut revision,
                TransferEvent::TransferDebited { id },
                "debited",
            )
            .await?;
        }
        let credit = AccountCommand::Credit {
            amount: request.amount,
            transfer: id,
        };
        match self
            .accounts
            .handle(request.to, &credit, ids::derive(id, "credit"), id)
            .await
        {
            Ok(_) => {
                let done = TransferEvent::TransferCompleted { id };
                self.record(id, &mut revision, done, "completed").await?;
                Ok(Outcome::Completed)
            }
            Err(HandleError::Rejected(reason)) => {
                let refund = AccountCommand::Refund {
                    amount: request.amount,
                    transfer: id,
                };
                self.accounts
                    .handle(request.from, &refund, ids::derive(id, "refund"), id)
                    .await?;
                let compensated = TransferEvent::TransferCompensated {
                    id,
                    reason: reason.to_string(),
                };
                self.record(id, &mut revision, compensated, "compensated")
                    .await?;
                Ok(Outcome::Compensated)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Appends one progress event to the transfer stream, after `revision`.
    async fn record(
        &self,
        id: Uuid,
        revision: &mut u64,
        event: TransferEvent,
        step: &str,
    ) -> Result<(), AppendError> {
        let new = event
            .to_new_event()
            .with_id(ids::derive(id, step))
            .with_metadata(
                Metadata::new()
                    .with_correlation_id(id)
                    .with_causation_id(ids::derive(id, "requested")),
            );
        let result = self
            .store
            .append(
                &transfer::stream(id),
                ExpectedRevision::Exact(*revision),
                vec![new],
            )
            .await?;
        *revision = result.next_expected_revision;
        Ok(())
    }
}

/// Saga workers running as a consumer group over the `transfer` category.
pub struct SagaWorkers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<(), SagaError>>,
    handled: Arc<AtomicU64>,
}

impl SagaWorkers {
    /// Starts `size` workers (at least 1), each following its share of the transfer
    /// streams from the start of `$all`.
    pub fn spawn(store: Arc<dyn EventStore>, saga: TransferSaga, size: u32) -> Self {
        let size = size.max(1);
        let (stop, stopped) = watch::channel(false);
        let handled = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for member in 0..size {
            let (store, saga, handled) = (store.clone(), saga.clone(), handled.clone());
            let mut stopped = stopped.clone();
            tasks.spawn(async move {
                let group = ConsumerGroup::new(member, size).map_err(SagaError::Read)?;
                let filter = EventFilter::category("transfer")?
                    .with_types(["TransferRequested"])
                    .with_consumer_group(group);
                let mut events = store.subscribe_to_all(SubscribeFrom::Start, filter).await?;
                loop {
                    let next = tokio::select! {
                        next = events.next() => next,
                        _ = stopped.wait_for(|s| *s) => return Ok(()),
                    };
                    let Some(event) = next else { return Ok(()) };
                    let event = event?;
                    if let Some(TransferEvent::TransferRequested(request)) =
                        TransferEvent::from_recorded(&event)
                    {
                        saga.react(&request).await?;
                        handled.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        Self {
            stop,
            tasks,
            handled,
        }
    }

    /// How many requests the workers have carried to an outcome.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// Stops the workers and returns the first error any of them hit.
    pub async fn stop(mut self) -> Result<(), SagaError> {
        let _ = self.stop.send(true);
        let mut first = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            if let Ok(Err(e)) = joined
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}
