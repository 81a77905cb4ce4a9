//! The DCB design, on the toolkit's [`DecisionHandler`]: no account streams and no
//! saga. A transfer reads a decision model folded from the events tagged with either
//! account, decides with the same account rules ([`Ledger`]), and appends the debit
//! (tagged `account:<from>`), the credit (tagged `account:<to>`) and
//! `TransferCompleted` in one append, on condition that no event tagged with either
//! account was stored after the position the model read. A lost race re-reads and
//! decides again.
//!
//! Events go into small streams that only group them: `transfer-<id>`, `opening-<n>`
//! and `freezing-<n>`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use foldstore_core::dcb::{Query, QueryItem};
use foldstore_core::decider::Decider;
use foldstore_core::{
    CommandContext, CommandError, DecisionHandler, DecodeError, DomainEvent, EventStore,
    ExpectedRevision, StreamName, deterministic_event_id,
};
use uuid::Uuid;

use crate::account::{Account, AccountCommand, AccountError, AccountEvent, AccountId};
use crate::handler::retry_policy;
use crate::ids;
use crate::transfer::{self, Outcome, TransferEvent, TransferRequest};

/// Any event the DCB design writes: an account event or a transfer event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerEvent {
    /// Something happened to an account.
    Account(AccountEvent),
    /// A transfer ended.
    Transfer(TransferEvent),
}

impl DomainEvent for LedgerEvent {
    fn event_type(&self) -> &'static str {
        match self {
            LedgerEvent::Account(e) => e.event_type(),
            LedgerEvent::Transfer(e) => e.event_type(),
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            LedgerEvent::Account(e) => e.schema_version(),
            LedgerEvent::Transfer(e) => e.schema_version(),
        }
    }

    fn event_types() -> &'static [(&'static str, u32)] {
        static TYPES: OnceLock<Vec<(&'static str, u32)>> = OnceLock::new();
        TYPES.get_or_init(|| {
            let accounts = AccountEvent::event_types().iter();
            accounts
                .chain(TransferEvent::event_types())
                .copied()
                .collect()
        })
    }

    fn tags(&self) -> Vec<String> {
        match self {
            LedgerEvent::Account(e) => e.tags(),
            LedgerEvent::Transfer(e) => e.tags(),
        }
    }

    fn encode_data(&self) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            LedgerEvent::Account(e) => e.encode_data(),
            LedgerEvent::Transfer(e) => e.encode_data(),
        }
    }

    fn decode_data(event_type: &str, data: &[u8]) -> Result<Self, DecodeError> {
        if AccountEvent::current_version(event_type).is_some() {
            AccountEvent::decode_data(event_type, data).map(LedgerEvent::Account)
        } else {
            TransferEvent::decode_data(event_type, data).map(LedgerEvent::Transfer)
        }
    }
}

/// What the DCB bank is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerCommand {
    /// Open an account.
    Open {
        /// The account.
        account: AccountId,
        /// Its first balance.
        balance: u64,
    },
    /// Freeze an account.
    Freeze {
        /// The account.
        account: AccountId,
    },
    /// Move money between two accounts.
    Transfer(TransferRequest),
}

/// The DCB decider: its state is every account the query covered, so one decision
/// can span two accounts.
///
/// ```
/// use bank::account::{AccountError, AccountEvent, AccountId};
/// use bank::dcb::{Ledger, LedgerCommand, LedgerEvent};
/// use bank::transfer::TransferRequest;
/// use foldstore_core::testing::DeciderSpec;
///
/// let (a, b) = (AccountId(1), AccountId(2));
/// let r = TransferRequest { id: uuid::Uuid::from_u128(1), from: a, to: b, amount: 80 };
/// DeciderSpec::new(Ledger)
///     .given([
///         LedgerEvent::Account(AccountEvent::Opened { account: a, balance: 50 }),
///         LedgerEvent::Account(AccountEvent::Opened { account: b, balance: 0 }),
///     ])
///     .when(LedgerCommand::Transfer(r))
///     .then_error(AccountError::InsufficientFunds { account: a, balance: 50, amount: 80 });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Ledger;

impl Decider for Ledger {
    type Command = LedgerCommand;
    type Event = LedgerEvent;
    type State = BTreeMap<AccountId, Account>;
    type Error = AccountError;

    fn initial_state(&self) -> Self::State {
        BTreeMap::new()
    }

    fn decide(
        &self,
        command: &LedgerCommand,
        state: &Self::State,
    ) -> Result<Vec<LedgerEvent>, AccountError> {
        let decide = |command: AccountCommand| {
            let account = state.get(&command.account()).cloned().unwrap_or_default();
            account.decide(&command)
        };
        let events = match *command {
            LedgerCommand::Open { account, balance } => {
                decide(AccountCommand::Open { account, balance })?
            }
            LedgerCommand::Freeze { account } => decide(AccountCommand::Freeze { account })?,
            LedgerCommand::Transfer(r) => {
                let mut events = decide(AccountCommand::Debit {
                    account: r.from,
                    amount: r.amount,
                    transfer: r.id,
                })?;
                events.extend(decide(AccountCommand::Credit {
                    account: r.to,
                    amount: r.amount,
                    transfer: r.id,
                })?);
                if events.is_empty() {
                    return Ok(vec![]);
                }
                let mut events: Vec<LedgerEvent> =
                    events.into_iter().map(LedgerEvent::Account).collect();
                events.push(LedgerEvent::Transfer(TransferEvent::TransferCompleted {
                    id: r.id,
                }));
                return Ok(events);
            }
        };
        Ok(events.into_iter().map(LedgerEvent::Account).collect())
    }

    fn evolve(&self, mut state: Self::State, event: &LedgerEvent) -> Self::State {
        if let LedgerEvent::Account(e) = event {
            let account = state.remove(&e.account()).unwrap_or_default();
            state.insert(e.account(), account.evolve(e));
        }
        state
    }
}

/// Why a DCB command was not carried out.
pub type DcbError = CommandError<AccountError>;

/// The bank, DCB style. Cheap to clone.
#[derive(Clone)]
pub struct DcbBank {
    store: Arc<dyn EventStore>,
    handler: Arc<DecisionHandler<Ledger>>,
    conflicts: Arc<AtomicU64>,
}

impl DcbBank {
    /// A bank over `store`, with [`retry_policy`].
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        let handler = DecisionHandler::new(store.clone(), Ledger).with_retry(retry_policy());
        Self {
            store,
            handler: Arc::new(handler),
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

    async fn run(
        &self,
        accounts: &[AccountId],
        stream: &StreamName,
        command: &LedgerCommand,
        seed: Uuid,
    ) -> Result<Vec<LedgerEvent>, DcbError> {
        let ctx = CommandContext::new()
            .correlation_id(seed)
            .causation_id(seed)
            .id_seed(seed);
        let outcome = self
            .handler
            .handle(&Self::query(accounts), stream, command, &ctx)
            .await?;
        self.conflicts.fetch_add(
            u64::from(outcome.attempts.saturating_sub(1)),
            Ordering::Relaxed,
        );
        Ok(outcome.events)
    }

    /// Opens `account` with `balance`; refused if it was opened before.
    pub async fn open(&self, account: AccountId, balance: u64) -> Result<(), DcbError> {
        let stream = StreamName::new(format!("opening-{}", account.0)).expect("a valid name");
        let seed = ids::derive(Uuid::from_u128(u128::from(account.0)), "open");
        let command = LedgerCommand::Open { account, balance };
        self.run(&[account], &stream, &command, seed).await?;
        Ok(())
    }

    /// Freezes `account`.
    pub async fn freeze(&self, account: AccountId) -> Result<(), DcbError> {
        let stream = StreamName::new(format!("freezing-{}", account.0)).expect("a valid name");
        let seed = ids::derive(Uuid::from_u128(u128::from(account.0)), "freeze");
        let command = LedgerCommand::Freeze { account };
        self.run(&[account], &stream, &command, seed).await?;
        Ok(())
    }

    /// Moves money in one conditional append (the debit, the credit and
    /// `TransferCompleted`), or records `TransferFailed` when an account refuses
    /// (nothing moves then).
    pub async fn transfer(&self, request: &TransferRequest) -> Result<Outcome, DcbError> {
        let id = request.id;
        let stream = transfer::stream(id);
        let accounts = [request.from, request.to];
        let command = LedgerCommand::Transfer(*request);
        match self.run(&accounts, &stream, &command, id).await {
            Ok(_) => Ok(Outcome::Completed),
            Err(CommandError::Rejected(reason)) => {
                let failed = TransferEvent::TransferFailed {
                    id,
                    reason: reason.to_string(),
                };
                let event = failed
                    .to_new_event()
                    .map_err(CommandError::Encode)?
                    .with_id(deterministic_event_id(ids::derive(id, "failed"), 0));
                self.store
                    .append(&stream, ExpectedRevision::NoStream, vec![event])
                    .await?;
                Ok(Outcome::Failed)
            }
            Err(e) => Err(e),
        }
    }
}
