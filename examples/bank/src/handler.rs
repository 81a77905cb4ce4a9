//! The aggregate design's command handling, on the toolkit's
//! [`CommandHandler`]: load a stream, decide, append with the `Exact` revision read,
//! and on a conflict read, decide and append again.
//!
//! With a [`CommandContext::id_seed`], the events' ids derive from the seed, so a
//! command handled twice (a saga replaying) appends nothing the second time; the
//! context's correlation and causation ids go into every event's metadata.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use foldstore_core::{CommandContext, CommandError, CommandHandler, EventStore, RetryPolicy};

use crate::account::{
    Account, AccountCommand, AccountDecider, AccountError, AccountEvent, AccountId,
};
use crate::transfer::{self, TransferCommand, TransferDecider, TransferError, TransferEvent};

/// A failed account command.
pub type AccountCommandError = CommandError<AccountError>;
/// A failed transfer command.
pub type TransferCommandError = CommandError<TransferError>;

/// The retry policy of the bank's handlers: under the scenario's contention a command
/// may lose many races in a row, so it gets up to 100 attempts, with short waits.
pub fn retry_policy() -> RetryPolicy {
    RetryPolicy::contended()
}

/// Command handlers for account streams (`account-<n>`) and transfer streams
/// (`transfer-<id>`). Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use bank::account::{AccountCommand, AccountId};
/// use bank::handler::AggregateBank;
/// use foldstore_core::CommandContext;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bank = AggregateBank::new(Arc::new(foldstore_core::InMemoryStore::new()));
/// let account = AccountId(1);
/// bank.account(&AccountCommand::Open { account, balance: 50 }, &CommandContext::new()).await?;
/// let debit = AccountCommand::Debit { account, amount: 80, transfer: uuid::Uuid::nil() };
/// let refused = bank.account(&debit, &CommandContext::new()).await.unwrap_err();
/// assert!(refused.is_rejected());
/// assert_eq!(bank.load_account(account).await?.balance, 50);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AggregateBank {
    accounts: Arc<CommandHandler<AccountDecider>>,
    transfers: Arc<CommandHandler<TransferDecider>>,
    conflicts: Arc<AtomicU64>,
}

impl AggregateBank {
    /// Handlers over `store`, with [`retry_policy`].
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            accounts: Arc::new(
                CommandHandler::new(store.clone(), AccountDecider).with_retry(retry_policy()),
            ),
            transfers: Arc::new(
                CommandHandler::new(store, TransferDecider).with_retry(retry_policy()),
            ),
            conflicts: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many appends lost to a concurrent writer and were retried, so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    fn count(&self, attempts: u32) {
        self.conflicts
            .fetch_add(u64::from(attempts.saturating_sub(1)), Ordering::Relaxed);
    }

    /// Handles an account command on its account's stream; returns the events it
    /// appended (or, on a replay, found).
    pub async fn account(
        &self,
        command: &AccountCommand,
        ctx: &CommandContext,
    ) -> Result<Vec<AccountEvent>, AccountCommandError> {
        let outcome = self
            .accounts
            .handle(&command.account().stream(), command, ctx)
            .await?;
        self.count(outcome.attempts);
        Ok(outcome.events)
    }

    /// Handles a transfer command on its transfer's stream.
    pub async fn transfer(
        &self,
        command: &TransferCommand,
        ctx: &CommandContext,
    ) -> Result<Vec<TransferEvent>, TransferCommandError> {
        let outcome = self
            .transfers
            .handle(&transfer::stream(command.id()), command, ctx)
            .await?;
        self.count(outcome.attempts);
        Ok(outcome.events)
    }

    /// An account's current state.
    pub async fn load_account(&self, account: AccountId) -> Result<Account, AccountCommandError> {
        Ok(self.accounts.load(&account.stream()).await?.state)
    }
}
