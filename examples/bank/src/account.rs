//! One bank account as a decider: commands, events, state, and the pure
//! `decide`/`evolve` pair. No I/O.
//!
//! The same events serve both designs. In the aggregate design they live in the stream
//! `account-<n>`; in the DCB design they live in transfer streams and carry the tag
//! `account:<n>`. Every event names its account in its data, so the invariant checker
//! reads both designs the same way.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An account number.
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
        write!(f, "account {}", self.0)
    }
}

/// What happened to an account. Amounts are in cents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AccountEvent {
    /// The account was opened with an initial balance.
    Opened {
        /// The account.
        account: AccountId,
        /// Its first balance.
        balance: u64,
    },
    /// Money left the account for a transfer.
    Debited {
        /// The account.
        account: AccountId,
        /// How much.
        amount: u64,
        /// The transfer it belongs to.
        transfer: Uuid,
    },
    /// Money arrived for a transfer, or came back when a transfer was compensated.
    Credited {
        /// The account.
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
        account: AccountId,
    },
}

/// The stored event types, one per variant.
pub const ACCOUNT_EVENT_TYPES: [&str; 4] = ["Opened", "Debited", "Credited", "Frozen"];

impl AccountEvent {
    /// The stored event type.
    pub fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Opened { .. } => "Opened",
            AccountEvent::Debited { .. } => "Debited",
            AccountEvent::Credited { .. } => "Credited",
            AccountEvent::Frozen { .. } => "Frozen",
        }
    }

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

    /// The event as stored: its type and its JSON data (the variant's fields).
    pub fn to_new_event(&self) -> foldstore_core::NewEvent {
        let value = serde_json::to_value(self).expect("account events serialize");
        let data = value.get("data").cloned().unwrap_or_default();
        foldstore_core::NewEvent::json(self.event_type(), &data).expect("JSON serializes")
    }

    /// Reads an account event back, or `None` when `event` is not one.
    pub fn from_recorded(event: &foldstore_core::RecordedEvent) -> Option<AccountEvent> {
        if !ACCOUNT_EVENT_TYPES.contains(&event.event_type.as_str()) {
            return None;
        }
        let data: serde_json::Value = event.json().ok()?;
        serde_json::from_value(serde_json::json!({ "type": event.event_type, "data": data })).ok()
    }
}

/// What can be asked of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    /// Open it with a balance.
    Open {
        /// The first balance.
        balance: u64,
    },
    /// Take money out for a transfer.
    Debit {
        /// How much.
        amount: u64,
        /// The transfer.
        transfer: Uuid,
    },
    /// Put money in for a transfer.
    Credit {
        /// How much.
        amount: u64,
        /// The transfer.
        transfer: Uuid,
    },
    /// Give back the money a failed transfer debited. Accepted even when frozen, so
    /// compensation can always finish.
    Refund {
        /// How much.
        amount: u64,
        /// The transfer.
        transfer: Uuid,
    },
    /// Freeze it.
    Freeze,
}

/// Why an account refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// The account was never opened.
    #[error("{0} is not open: open it before moving money")]
    NotOpen(AccountId),
    /// The account is already open.
    #[error("{0} is already open: pick another account number")]
    AlreadyOpen(AccountId),
    /// The account is frozen.
    #[error("{0} is frozen: no money moves in or out until it is unfrozen")]
    Frozen(AccountId),
    /// The debit would make the balance negative.
    #[error("{account} holds {balance} cents, less than the {amount} asked for: ask for less")]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account.
    pub id: AccountId,
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
    /// The state before any event.
    pub fn initial(id: AccountId) -> Self {
        Self {
            id,
            open: false,
            balance: 0,
            frozen: false,
            applied: HashSet::new(),
        }
    }

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
    ///
    /// ```
    /// use bank::account::{Account, AccountCommand, AccountError, AccountEvent, AccountId};
    ///
    /// let id = AccountId(7);
    /// let opened = Account::initial(id).evolve(&AccountEvent::Opened { account: id, balance: 100 });
    /// let transfer = uuid::Uuid::nil();
    /// let too_much = AccountCommand::Debit { amount: 101, transfer };
    /// assert!(matches!(opened.decide(&too_much), Err(AccountError::InsufficientFunds { .. })));
    /// let ok = AccountCommand::Debit { amount: 100, transfer };
    /// assert_eq!(opened.decide(&ok).unwrap().len(), 1);
    /// ```
    pub fn decide(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        let account = self.id;
        if let AccountCommand::Open { balance } = command {
            if self.open {
                return Err(AccountError::AlreadyOpen(account));
            }
            return Ok(vec![AccountEvent::Opened {
                account,
                balance: *balance,
            }]);
        }
        if !self.open {
            return Err(AccountError::NotOpen(account));
        }
        match *command {
            AccountCommand::Open { .. } => unreachable!("handled above"),
            AccountCommand::Freeze if self.frozen => Ok(vec![]),
            AccountCommand::Freeze => Ok(vec![AccountEvent::Frozen { account }]),
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
            AccountCommand::Debit { amount, transfer } => Ok(vec![AccountEvent::Debited {
                account,
                amount,
                transfer,
            }]),
            AccountCommand::Credit { amount, transfer } => Ok(vec![AccountEvent::Credited {
                account,
                amount,
                transfer,
                refund: false,
            }]),
            AccountCommand::Refund { amount, transfer } => Ok(vec![AccountEvent::Credited {
                account,
                amount,
                transfer,
                refund: true,
            }]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(balance: u64) -> Account {
        let id = AccountId(1);
        Account::initial(id).evolve(&AccountEvent::Opened {
            account: id,
            balance,
        })
    }

    #[test]
    fn a_debit_that_would_go_negative_is_refused() {
        let t = Uuid::from_u128(1);
        let err = open(10)
            .decide(&AccountCommand::Debit {
                amount: 11,
                transfer: t,
            })
            .unwrap_err();
        assert!(matches!(
            err,
            AccountError::InsufficientFunds {
                balance: 10,
                amount: 11,
                ..
            }
        ));
    }

    #[test]
    fn a_repeated_step_changes_nothing() {
        let t = Uuid::from_u128(1);
        let cmd = AccountCommand::Debit {
            amount: 4,
            transfer: t,
        };
        let acc = open(10);
        let events = acc.decide(&cmd).unwrap();
        let acc = events.iter().fold(acc, Account::evolve);
        assert_eq!(acc.balance, 6);
        assert_eq!(acc.decide(&cmd).unwrap(), vec![]);
    }

    #[test]
    fn frozen_refuses_transfers_but_takes_refunds() {
        let t = Uuid::from_u128(1);
        let acc = open(10).evolve(&AccountEvent::Frozen {
            account: AccountId(1),
        });
        let credit = AccountCommand::Credit {
            amount: 1,
            transfer: t,
        };
        assert_eq!(acc.decide(&credit), Err(AccountError::Frozen(AccountId(1))));
        let refund = AccountCommand::Refund {
            amount: 1,
            transfer: t,
        };
        assert_eq!(acc.decide(&refund).unwrap().len(), 1);
    }

    #[test]
    fn events_round_trip_through_the_store_format() {
        let e = AccountEvent::Credited {
            account: AccountId(3),
            amount: 5,
            transfer: Uuid::from_u128(9),
            refund: true,
        };
        let new = e.to_new_event();
        assert_eq!(new.event_type, "Credited");
        let data: serde_json::Value = serde_json::from_slice(&new.data).unwrap();
        assert_eq!(data["amount"], 5);
        let back: AccountEvent =
            serde_json::from_value(serde_json::json!({"type": "Credited", "data": data})).unwrap();
        assert_eq!(back, e);
    }
}
