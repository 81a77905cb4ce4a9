//! The bank account's rules, as given/when/then specifications.

use foldstore_core::testing::{AggregateSpec, DeciderSpec};

use crate::bank::*;

#[test]
fn an_account_opens_once() {
    DeciderSpec::new(Bank).when(open("a")).then([opened("a")]);
    DeciderSpec::new(Bank)
        .given([opened("a")])
        .when(open("a"))
        .then_error(AccountError::AlreadyOpen);
}

#[test]
fn deposits_need_an_open_account() {
    DeciderSpec::new(Bank)
        .when(deposit("a", 5))
        .then_error(AccountError::NotOpen);
    DeciderSpec::new(Bank)
        .given([opened("a")])
        .when(deposit("a", 5))
        .then([deposited("a", 5)]);
}

#[test]
fn withdrawing_more_than_the_balance_is_rejected() {
    DeciderSpec::new(Bank)
        .given([opened("a"), deposited("a", 10), withdrawn("a", 4)])
        .when(withdraw("a", 7))
        .then_error(AccountError::InsufficientFunds {
            balance: 6,
            requested: 7,
        });
    DeciderSpec::new(Bank)
        .given([opened("a"), deposited("a", 10)])
        .when(withdraw("a", 10))
        .then_state(Account {
            open: true,
            balance: 0,
        });
}

#[test]
fn the_aggregate_form_keeps_the_same_rules() {
    AggregateSpec::<Account>::aggregate()
        .given([opened("a"), deposited("a", 3)])
        .when(withdraw("a", 4))
        .then_error(AccountError::InsufficientFunds {
            balance: 3,
            requested: 4,
        });
    AggregateSpec::<Account>::aggregate()
        .given([opened("a")])
        .when(deposit("a", 1))
        .then([deposited("a", 1)]);
}

#[test]
#[should_panic(expected = "the decider rejected the command")]
fn then_reports_an_unexpected_rejection() {
    DeciderSpec::new(Bank)
        .when(deposit("a", 5))
        .then([deposited("a", 5)]);
}
