//! One bank account as a decider ([`AccountDecider`]): commands, events, state, and
//! the pure `decide`/`evolve` pair. No I/O.
//!
//! The same events serve both designs. In the aggregate design they live in the stream
//! `account-<n>`; in the DCB design they live in transfer streams. Either way they carry
//! the tag `account:<n>` (from `#[event(tag = "account")]`) and name their account in
//! their data, so the invariant checker reads both designs the same way.

use std::collections::HashSet;

use foldstore_core::DomainEvent;
use foldstore_core::decider::Decider;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An account number. Displays as the bare number, which is what its tag carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccountId(pub u32);

impl AccountId {
    /// The account's stream in the aggregate design: `account-<n>`.
    pub fn stream(self) -> foldstore_core::StreamName {
        foldstore_core::StreamName::new(format!("account-{}", self.0))
            .expect("account-<n> is a valid stream name")
    }

    /// The account's DCB tag: `account:<n>`.
    pub fn tag(self) -> String {
        format!("account:{}", self.0)
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What happened to an account. Amounts are in cents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum AccountEvent {
    /// The account was opened with an initial balance.
    Opened {
        /// The account.
        #[event(tag = "account")]
        account: AccountId,
        /// Its first balance.
        balance: u64,
    },
    /// Money left the account for a transfer.
    Debited {
        /// The account.
        #[event(tag = "account")]
        account: AccountId,
        /// How much.
        amount: u64,
        /// The transfer it belongs to.
        transfer: Uuid,
    },
    /// Money arrived for a transfer, or came back when a transfer was compensated.
    Credited {
        /// The account.
        #[event(tag = "account")]
        account: AccountId,
        /// How much.
        amount: u64,
        /// The transfer it belongs to.
        transfer: Uuid,
        /// Whether this returns the money of a failed transfer to its source.
        refund: bool,
    },
    /// The account was frozen: no money leaves it and none arrives, except refunds.
    Frozen {
        /// The account.
        #[event(tag = "account")]
        account: AccountId,
    },
}

/// The stored event types, one per variant.
pub const ACCOUNT_EVENT_TYPES: [&str; 4] = ["Opened", "Debited", "Credited", "Frozen"];

impl AccountEvent {
    /// The account the event belongs to.
    pub fn account(&self) -> AccountId {
        match self {
            AccountEvent::Opened { account, .. }
            | AccountEvent::Debited { account, .. }
            | AccountEvent::Credited { account, .. }
            | AccountEvent::Frozen { account } => *account,
        }
    }

    /// The change of the account's balance, in cents.
    pub fn delta(&self) -> i128 {
        match self {
            AccountEvent::Opened { balance, .. } => i128::from(*balance),
            AccountEvent::Debited { amount, .. } => -i128::from(*amount),
            AccountEvent::Credited { amount, .. } => i128::from(*amount),
            AccountEvent::Frozen { .. } => 0,
        }
    }

    /// Reads an account event back, or `None` when `event` is not one.
    pub fn decode(event: &foldstore_core::RecordedEvent) -> Option<AccountEvent> {
        AccountEvent::from_recorded(event).ok()
    }
}

/// What can be asked of an account. Every command names its account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountCommand {
    /// Open it with a balance.
    Open {
        /// The account.
        account: AccountId,
        /// The first balance.
        balance: u64,
    },
    /// Take money out for a transfer.
    Debit {
        /// The account.
        account: AccountId,
        /// How much.
        amount: u64,
        /// The transfer.
        transfer: Uuid,
    },
    /// Put money in for a transfer.
    Credit {
        /// The account.
        account: AccountId,
        /// How much.
        amount: u64,
        /// The transfer.
        transfer: Uuid,
    },
    /// Give back the money a failed transfer debited. Accepted even when frozen, so
    /// compensation can always finish.
    Refund {
        /// The account.
        account: AccountId,
        /// How much.
        amount: u64,
        /// The transfer.
        transfer: Uuid,
    },
    /// Freeze it.
    Freeze {
        /// The account.
        account: AccountId,
    },
}

impl AccountCommand {
    /// The account the command is for.
    pub fn account(&self) -> AccountId {
        match self {
            AccountCommand::Open { account, .. }
            | AccountCommand::Debit { account, .. }
            | AccountCommand::Credit { account, .. }
            | AccountCommand::Refund { account, .. }
            | AccountCommand::Freeze { account } => *account,
        }
    }
}

/// Why an account refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// The account was never opened.
    #[error("account {0} is not open: open it before moving money")]
    NotOpen(AccountId),
    /// The account is already open.
    #[error("account {0} is already open: pick another account number")]
    AlreadyOpen(AccountId),
    /// The account is frozen.
    #[error("account {0} is frozen: no money moves in or out until it is unfrozen")]
    Frozen(AccountId),
    /// The debit would make the balance negative.
    #[error(
        "account {account} holds {balance} cents, less than the {amount} asked for: ask for less"
    )]
    InsufficientFunds {
        /// The account.
        account: AccountId,
        /// Its balance.
        balance: u64,
        /// The amount asked for.
        amount: u64,
    },
}

/// What an account remembers to decide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    /// Whether it was opened.
    pub open: bool,
    /// Its balance in cents.
    pub balance: u64,
    /// Whether it is frozen.
    pub frozen: bool,
    /// The transfer steps already applied: a repeated command changes nothing.
    applied: HashSet<(Uuid, Step)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Step {
    Debit,
    Credit,
    Refund,
}

impl Account {
    /// Applies one event.
    pub fn evolve(mut self, event: &AccountEvent) -> Self {
        match event {
            AccountEvent::Opened { balance, .. } => {
                self.open = true;
                self.balance = *balance;
            }
            AccountEvent::Debited {
                amount, transfer, ..
            } => {
                self.balance = self.balance.saturating_sub(*amount);
                self.applied.insert((*transfer, Step::Debit));
            }
            AccountEvent::Credited {
                amount,
                transfer,
                refund,
                ..
            } => {
                self.balance += amount;
                let step = if *refund { Step::Refund } else { Step::Credit };
                self.applied.insert((*transfer, step));
            }
            AccountEvent::Frozen { .. } => self.frozen = true,
        }
        self
    }

    /// Decides what a command does. An empty list means "already done".
    pub fn decide(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        let account = command.account();
        if let AccountCommand::Open { balance, .. } = *command {
            if self.open {
                return Err(AccountError::AlreadyOpen(account));
            }
            return Ok(vec![AccountEvent::Opened { account, balance }]);
        }
        if !self.open {
            return Err(AccountError::NotOpen(account));
        }
        match *command {
            AccountCommand::Open { .. } => unreachable!("handled above"),
            AccountCommand::Freeze { .. } if self.frozen => Ok(vec![]),
            AccountCommand::Freeze { .. } => Ok(vec![AccountEvent::Frozen { account }]),
            AccountCommand::Debit { transfer, .. }
                if self.applied.contains(&(transfer, Step::Debit)) =>
            {
                Ok(vec![])
            }
            AccountCommand::Credit { transfer, .. }
                if self.applied.contains(&(transfer, Step::Credit)) =>
            {
                Ok(vec![])
            }
            AccountCommand::Refund { transfer, .. }
                if self.applied.contains(&(transfer, Step::Refund)) =>
            {
                Ok(vec![])
            }
            AccountCommand::Debit { .. } | AccountCommand::Credit { .. } if self.frozen => {
                Err(AccountError::Frozen(account))
            }
            AccountCommand::Debit { amount, .. } if amount > self.balance => {
                Err(AccountError::InsufficientFunds {
                    account,
                    balance: self.balance,
                    amount,
                })
            }
            AccountCommand::Debit {
                amount, transfer, ..
            } => Ok(vec![AccountEvent::Debited {
                account,
                amount,
                transfer,
            }]),
            AccountCommand::Credit {
                amount, transfer, ..
            } => Ok(vec![AccountEvent::Credited {
                account,
                amount,
                transfer,
                refund: false,
            }]),
            AccountCommand::Refund {
                amount, transfer, ..
            } => Ok(vec![AccountEvent::Credited {
                account,
                amount,
                transfer,
                refund: true,
            }]),
        }
    }
}

/// The account decider, for the toolkit's command handler: one account stream is one
/// [`Account`].
///
/// ```
/// use bank::account::{AccountCommand, AccountDecider, AccountError, AccountEvent, AccountId};
/// use foldstore_core::decider::{Decider, fold};
///
/// let account = AccountId(7);
/// let state = fold(&AccountDecider, &[AccountEvent::Opened { account, balance: 100 }]);
/// let transfer = uuid::Uuid::nil();
/// let too_much = AccountCommand::Debit { account, amount: 101, transfer };
/// assert!(matches!(
///     AccountDecider.decide(&too_much, &state),
///     Err(AccountError::InsufficientFunds { .. })
/// ));
/// let ok = AccountCommand::Debit { account, amount: 100, transfer };
/// assert_eq!(AccountDecider.decide(&ok, &state).unwrap().len(), 1);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountDecider;

impl Decider for AccountDecider {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type State = Account;
    type Error = AccountError;

    fn initial_state(&self) -> Account {
        Account::default()
    }

    fn decide(
        &self,
        command: &AccountCommand,
        state: &Account,
    ) -> Result<Vec<AccountEvent>, AccountError> {
        state.decide(command)
    }

    fn evolve(&self, state: Account, event: &AccountEvent) -> Account {
        state.evolve(event)
    }
}

#[cfg(test)]
mod tests {
    use foldstore_core::testing::DeciderSpec;

    use super::*;

    const A: AccountId = AccountId(1);
    const T: Uuid = Uuid::from_u128(1);

    fn opened(balance: u64) -> AccountEvent {
        AccountEvent::Opened {
            account: A,
            balance,
        }
    }

    fn debit(amount: u64) -> AccountCommand {
        AccountCommand::Debit {
            account: A,
            amount,
            transfer: T,
        }
    }

    #[test]
    fn a_debit_that_would_go_negative_is_refused() {
        DeciderSpec::new(AccountDecider)
            .given([opened(10)])
            .when(debit(11))
            .then_error(AccountError::InsufficientFunds {
                account: A,
                balance: 10,
                amount: 11,
            });
    }

    #[test]
    fn a_repeated_step_changes_nothing() {
        let debited = AccountEvent::Debited {
            account: A,
            amount: 4,
            transfer: T,
        };
        DeciderSpec::new(AccountDecider)
            .given([opened(10)])
            .when(debit(4))
            .then([debited.clone()]);
        DeciderSpec::new(AccountDecider)
            .given([opened(10), debited])
            .when(debit(4))
            .then([]);
    }

    #[test]
    fn frozen_refuses_transfers_but_takes_refunds() {
        let frozen = AccountEvent::Frozen { account: A };
        DeciderSpec::new(AccountDecider)
            .given([opened(10), frozen.clone()])
            .when(AccountCommand::Credit {
                account: A,
                amount: 1,
                transfer: T,
            })
            .then_error(AccountError::Frozen(A));
        DeciderSpec::new(AccountDecider)
            .given([opened(10), frozen])
            .when(AccountCommand::Refund {
                account: A,
                amount: 1,
                transfer: T,
            })
            .then([AccountEvent::Credited {
                account: A,
                amount: 1,
                transfer: T,
                refund: true,
            }]);
    }

    #[test]
    fn events_are_stored_with_their_account_tag() {
        let e = AccountEvent::Credited {
            account: AccountId(3),
            amount: 5,
            transfer: Uuid::from_u128(9),
            refund: true,
        };
        let new = e.to_new_event().unwrap();
        assert_eq!(new.event_type, "Credited");
        assert_eq!(new.tags, ["account:3"]);
        let data: serde_json::Value = serde_json::from_slice(&new.data).unwrap();
        assert_eq!(data["amount"], 5);
        assert_eq!(AccountEvent::decode_data("Credited", &new.data).unwrap(), e);
    }
}
