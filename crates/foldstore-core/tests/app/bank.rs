//! A small bank account domain for the toolkit's tests.

use foldstore_core::aggregate::Aggregate;
use foldstore_core::decider::Decider;
use foldstore_core::{DomainEvent, SnapshotState};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
pub(crate) enum AccountEvent {
    Opened {
        #[event(tag)]
        account: String,
        owner: String,
    },
    Deposited {
        #[event(tag)]
        account: String,
        cents: u64,
    },
    Withdrawn {
        #[event(tag)]
        account: String,
        cents: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AccountCommand {
    Open { account: String, owner: String },
    Deposit { account: String, cents: u64 },
    Withdraw { account: String, cents: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AccountError {
    AlreadyOpen,
    NotOpen,
    InsufficientFunds { balance: u64, requested: u64 },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Account {
    pub(crate) open: bool,
    pub(crate) balance: u64,
}

impl SnapshotState for Account {
    const STATE_TYPE: &'static str = "Account";
    const SCHEMA_VERSION: u32 = 1;
}

pub(crate) struct Bank;

impl Decider for Bank {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type State = Account;
    type Error = AccountError;

    fn initial_state(&self) -> Account {
        Account::default()
    }

    fn decide(&self, c: &AccountCommand, s: &Account) -> Result<Vec<AccountEvent>, AccountError> {
        match c {
            AccountCommand::Open { account, owner } => {
                if s.open {
                    return Err(AccountError::AlreadyOpen);
                }
                Ok(vec![AccountEvent::Opened {
                    account: account.clone(),
                    owner: owner.clone(),
                }])
            }
            AccountCommand::Deposit { account, cents } => {
                if !s.open {
                    return Err(AccountError::NotOpen);
                }
                Ok(vec![AccountEvent::Deposited {
                    account: account.clone(),
                    cents: *cents,
                }])
            }
            AccountCommand::Withdraw { account, cents } => {
                if !s.open {
                    return Err(AccountError::NotOpen);
                }
                if *cents > s.balance {
                    return Err(AccountError::InsufficientFunds {
                        balance: s.balance,
                        requested: *cents,
                    });
                }
                Ok(vec![AccountEvent::Withdrawn {
                    account: account.clone(),
                    cents: *cents,
                }])
            }
        }
    }

    fn evolve(&self, mut s: Account, e: &AccountEvent) -> Account {
        match e {
            AccountEvent::Opened { .. } => s.open = true,
            AccountEvent::Deposited { cents, .. } => s.balance += cents,
            AccountEvent::Withdrawn { cents, .. } => s.balance -= cents,
        }
        s
    }
}

/// The same model as an aggregate.
impl Aggregate for Account {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn apply(&mut self, event: &AccountEvent) {
        *self = Bank.evolve(std::mem::take(self), event);
    }

    fn handle(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        Bank.decide(command, self)
    }
}

pub(crate) fn open(account: &str) -> AccountCommand {
    AccountCommand::Open {
        account: account.into(),
        owner: "ada".into(),
    }
}

pub(crate) fn deposit(account: &str, cents: u64) -> AccountCommand {
    AccountCommand::Deposit {
        account: account.into(),
        cents,
    }
}

pub(crate) fn withdraw(account: &str, cents: u64) -> AccountCommand {
    AccountCommand::Withdraw {
        account: account.into(),
        cents,
    }
}

pub(crate) fn opened(account: &str) -> AccountEvent {
    AccountEvent::Opened {
        account: account.into(),
        owner: "ada".into(),
    }
}

pub(crate) fn deposited(account: &str, cents: u64) -> AccountEvent {
    AccountEvent::Deposited {
        account: account.into(),
        cents,
    }
}

pub(crate) fn withdrawn(account: &str, cents: u64) -> AccountEvent {
    AccountEvent::Withdrawn {
        account: account.into(),
        cents,
    }
}
