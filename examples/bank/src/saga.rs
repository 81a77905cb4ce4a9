//! The aggregate design's transfer saga (process manager), on the toolkit's
//! [`Saga`] runtime: it reacts to `TransferRequested` by debiting the source, then to
//! `TransferDebited` by crediting the target, and compensates when a step is refused.
//!
//! | event               | commands, in order                          | if the account refuses            |
//! |---------------------|---------------------------------------------|-----------------------------------|
//! | `TransferRequested` | debit the source; record `TransferDebited`  | record `TransferFailed`           |
//! | `TransferDebited`   | credit the target; record `TransferCompleted` | refund the source; record `TransferCompensated` |
//!
//! The saga is a pure function of the event. Its progress lives in the transfer stream
//! (written through the [`crate::transfer::TransferDecider`], which refuses steps out of
//! order), and the [`SagaRunner`] dispatches every command with an id seed derived from
//! the triggering event, so a replay (after a restart) appends nothing new.
//!
//! [`SagaWorkers`] runs `n` runners side by side, each a consumer-group member that
//! follows the transfer streams hashing to it, so `n` transfers run at once and their
//! account commands contend, which the command handler resolves by retrying.

use std::sync::Arc;

use async_trait::async_trait;
use foldstore_core::projection::{HandlerError, Stopper};
use foldstore_core::saga::{
    CommandBus, DispatchContext, DispatchError, Failure, Reaction, Saga, SagaError, SagaMonitor,
    SagaRunner,
};
use foldstore_core::{
    CommandContext, CommandError, ConsumerGroup, DomainEvent, EventFilter, EventStore,
    RecordedEvent,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::account::AccountCommand;
use crate::handler::AggregateBank;
use crate::transfer::{TransferCommand, TransferEvent, TransferRequest};

/// What the transfer saga dispatches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankCommand {
    /// An account command, with the transfer it serves (compensation needs it).
    Account {
        /// The command.
        command: AccountCommand,
        /// The transfer.
        request: TransferRequest,
    },
    /// A step recorded in the transfer stream.
    Transfer(TransferCommand),
}

/// The transfer saga; `member` of `size` when several run side by side.
///
/// ```
/// use bank::account::{AccountCommand, AccountId};
/// use bank::saga::{BankCommand, TransferSaga};
/// use bank::transfer::{TransferCommand, TransferRequest, stream};
/// use foldstore_core::saga::{DispatchError, SagaSpec, recorded_event};
///
/// let r = TransferRequest { id: uuid::Uuid::from_u128(1), from: AccountId(1), to: AccountId(2), amount: 5 };
/// let debited = recorded_event(stream(r.id).as_str(), "TransferDebited", &r);
/// let credit = BankCommand::Account {
///     command: AccountCommand::Credit { account: AccountId(2), amount: 5, transfer: r.id },
///     request: r,
/// };
/// let refund = BankCommand::Account {
///     command: AccountCommand::Refund { account: AccountId(1), amount: 5, transfer: r.id },
///     request: r,
/// };
/// SagaSpec::for_saga(TransferSaga::new())
///     .when(debited)
///     .then_commands(vec![
///         credit.clone(),
///         BankCommand::Transfer(TransferCommand::Complete { id: r.id }),
///     ])
///     // The target refuses the credit: refund the source, then record it.
///     .then_compensates(credit, DispatchError::rejected("frozen"), vec![
///         refund,
///         BankCommand::Transfer(TransferCommand::Compensate { id: r.id, reason: "frozen".into() }),
///     ]);
/// ```
#[derive(Debug, Clone)]
pub struct TransferSaga {
    name: String,
    group: Option<ConsumerGroup>,
}

impl Default for TransferSaga {
    fn default() -> Self {
        Self::new()
    }
}

impl TransferSaga {
    /// The saga, alone: it follows every transfer stream.
    pub fn new() -> Self {
        Self {
            name: "transfer".to_owned(),
            group: None,
        }
    }

    /// Member `member` of `size` sagas sharing the transfer streams (each has its own
    /// name, so its own position).
    pub fn member(group: ConsumerGroup) -> Self {
        Self {
            name: format!("transfer.{}-of-{}", group.member, group.size),
            group: Some(group),
        }
    }
}

impl Saga for TransferSaga {
    type Command = BankCommand;

    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> EventFilter {
        let filter = EventFilter::category("transfer")
            .expect("a valid category")
            .with_types(["TransferRequested", "TransferDebited"]);
        match self.group {
            Some(group) => filter.with_consumer_group(group),
            None => filter,
        }
    }

    fn react(&self, event: &RecordedEvent) -> Result<Reaction<BankCommand>, HandlerError> {
        let account = |command, request| BankCommand::Account { command, request };
        Ok(match TransferEvent::from_recorded(event)? {
            TransferEvent::TransferRequested(r) => {
                let debit = AccountCommand::Debit {
                    account: r.from,
                    amount: r.amount,
                    transfer: r.id,
                };
                Reaction::new()
                    .command(account(debit, r))
                    .command(BankCommand::Transfer(TransferCommand::RecordDebited(r)))
            }
            TransferEvent::TransferDebited(r) => {
                let credit = AccountCommand::Credit {
                    account: r.to,
                    amount: r.amount,
                    transfer: r.id,
                };
                Reaction::new()
                    .command(account(credit, r))
                    .command(BankCommand::Transfer(TransferCommand::Complete {
                        id: r.id,
                    }))
            }
            _ => Reaction::new(),
        })
    }

    fn compensate(&self, failure: &Failure<BankCommand>) -> Vec<BankCommand> {
        let reason = failure.error.message.clone();
        match &failure.command {
            BankCommand::Account {
                command: AccountCommand::Debit { .. },
                request,
            } => vec![BankCommand::Transfer(TransferCommand::Fail {
                id: request.id,
                reason,
            })],
            BankCommand::Account {
                command: AccountCommand::Credit { .. },
                request,
            } => vec![
                BankCommand::Account {
                    command: AccountCommand::Refund {
                        account: request.from,
                        amount: request.amount,
                        transfer: request.id,
                    },
                    request: *request,
                },
                BankCommand::Transfer(TransferCommand::Compensate {
                    id: request.id,
                    reason,
                }),
            ],
            // A refused transfer step means the transfer already ended: nothing to undo.
            _ => vec![],
        }
    }
}

/// Dispatches the saga's commands to the bank's command handlers.
#[derive(Clone)]
pub struct BankBus(pub AggregateBank);

fn dispatch_error<E: std::fmt::Display + std::fmt::Debug>(e: CommandError<E>) -> DispatchError {
    match e.rejection() {
        Some(reason) => DispatchError::rejected(reason.to_string()),
        None => DispatchError::transient(e.to_string()),
    }
}

#[async_trait]
impl CommandBus<BankCommand> for BankBus {
    async fn dispatch(
        &self,
        command: BankCommand,
        saga: DispatchContext,
    ) -> Result<(), DispatchError> {
        let ctx = CommandContext::from(&saga);
        match command {
            BankCommand::Account { command, .. } => {
                self.0
                    .account(&command, &ctx)
                    .await
                    .map_err(dispatch_error)?;
            }
            BankCommand::Transfer(command) => {
                self.0
                    .transfer(&command, &ctx)
                    .await
                    .map_err(dispatch_error)?;
            }
        }
        Ok(())
    }
}

/// Transfer saga runners side by side, as a consumer group over the transfer streams.
pub struct SagaWorkers {
    stopper: Stopper,
    tasks: JoinSet<Result<(), SagaError>>,
    monitors: Vec<SagaMonitor>,
}

impl SagaWorkers {
    /// Starts `size` runners (at least 1), each following its share of the transfer
    /// streams from its recorded position.
    pub fn spawn(
        store: Arc<dyn EventStore>,
        bank: AggregateBank,
        size: u32,
    ) -> Result<Self, SagaError> {
        let size = size.max(1);
        let stopper = Stopper::new();
        let mut tasks = JoinSet::new();
        let mut monitors = Vec::new();
        for member in 0..size {
            let group = ConsumerGroup::new(member, size).expect("member < size");
            let mut runner = SagaRunner::new(
                store.clone(),
                TransferSaga::member(group),
                BankBus(bank.clone()),
            )?;
            monitors.push(runner.monitor());
            let signal = stopper.signal();
            tasks.spawn(async move { runner.run(signal).await });
        }
        Ok(Self {
            stopper,
            tasks,
            monitors,
        })
    }

    /// Each runner's status.
    pub fn statuses(&self) -> Vec<foldstore_core::saga::SagaStatus> {
        self.monitors.iter().map(SagaMonitor::status).collect()
    }

    /// Events moved to the dead-letter streams so far (each is a stuck transfer).
    pub fn dead_letters(&self) -> u64 {
        self.monitors.iter().map(|m| m.status().dead_letters).sum()
    }

    /// Stops the runners (each finishes the event it is handling) and returns the
    /// first error any of them stopped with.
    pub async fn stop(mut self) -> Result<(), SagaError> {
        self.stopper.stop();
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
