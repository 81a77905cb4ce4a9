//! # bank
//!
//! A bank on foldstore, written twice, with tests that prove on every backend that it
//! keeps its rules: no money is created or destroyed, no balance ever goes negative,
//! every transfer ends exactly once, and the balances read model equals a rebuild
//! from zero.
//!
//! - **Aggregates and a saga** ([`Design::Aggregates`]): each account is a stream
//!   `account-<n>` written through a command handler ([`handler`]) that appends with
//!   the revision it read and retries on conflict. A transfer is a process: the
//!   [`saga`] reacts to `TransferRequested` by debiting the source, then crediting the
//!   target, and refunds the source when the target refuses.
//! - **Dynamic Consistency Boundary** ([`Design::Dcb`]): a transfer reads the events
//!   tagged with either account, decides, and appends the debit and the credit in one
//!   append conditioned on nothing tagged with either account having been stored since
//!   ([`dcb`]). No saga, no compensation.
//!
//! Both designs share the account decider ([`account`]) and are checked by the same
//! [`invariants`] checker. [`scenario::run_bank_scenario`] drives a run.
//!
//! ```
//! use std::sync::Arc;
//! use bank::account::AccountId;
//! use bank::dcb::DcbBank;
//! use bank::transfer::{Outcome, TransferRequest};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bank = DcbBank::new(Arc::new(foldstore_core::InMemoryStore::new()));
//! bank.open(AccountId(1), 100).await?;
//! bank.open(AccountId(2), 0).await?;
//! let request = |amount| TransferRequest {
//!     id: uuid::Uuid::now_v7(), from: AccountId(1), to: AccountId(2), amount,
//! };
//! assert_eq!(bank.transfer(&request(60)).await?, Outcome::Completed);
//! // Only 40 cents are left: the second transfer fails and moves nothing.
//! assert_eq!(bank.transfer(&request(60)).await?, Outcome::Failed);
//! # Ok(())
//! # }
//! ```

pub mod account;
pub mod balances;
pub mod dcb;
pub mod handler;
pub mod ids;
pub mod invariants;
pub mod saga;
pub mod scenario;
pub mod transfer;

/// Which of the two designs a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Design {
    /// Account streams, a command handler and a transfer saga.
    Aggregates,
    /// One conditional append per transfer over both accounts' tags.
    Dcb,
}
