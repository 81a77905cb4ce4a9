//! DCB decision models on the in-memory store: a decider over a query's events.

use std::sync::Arc;
use std::time::Duration;

use foldstore_core::dcb::{Query, QueryItem};
use foldstore_core::*;
use uuid::Uuid;

use crate::bank::*;
use crate::interleave::Interleave;

fn account_query(account: &str) -> Query {
    Query::from_items([QueryItem::new().tags([format!("account:{account}")])])
}

#[tokio::test]
async fn a_decider_runs_on_a_query_across_streams() {
    let store = Arc::new(InMemoryStore::new());
    let h = DecisionHandler::new(store.clone(), Bank);
    let q = account_query("x");
    let ctx = CommandContext::new();
    // The account's events land in two streams; the query sees them all.
    h.handle(
        &q,
        &StreamName::new("accounts-1").unwrap(),
        &open("x"),
        &ctx,
    )
    .await
    .unwrap();
    h.handle(
        &q,
        &StreamName::new("ledger-1").unwrap(),
        &deposit("x", 4),
        &ctx,
    )
    .await
    .unwrap();
    // Another account's events are outside the boundary.
    h.handle(
        &account_query("y"),
        &StreamName::new("accounts-2").unwrap(),
        &open("y"),
        &ctx,
    )
    .await
    .unwrap();
    let state = h.load(&q).await.unwrap();
    assert_eq!(state.state.balance, 4);
    assert_eq!(state.events_folded, 2);
    let err = h
        .handle(
            &q,
            &StreamName::new("ledger-1").unwrap(),
            &withdraw("x", 5),
            &ctx,
        )
        .await
        .unwrap_err();
    assert!(err.is_rejected());
}

#[tokio::test]
async fn a_matching_event_after_the_read_fails_the_condition_and_is_retried() {
    let store = Interleave::default();
    let h = DecisionHandler::new(Arc::new(store.clone()), Bank).with_retry(
        RetryPolicy::default()
            .max_attempts(2)
            .base_delay(Duration::from_micros(50)),
    );
    let q = account_query("x");
    let ctx = CommandContext::new();
    let s = StreamName::new("ledger-1").unwrap();
    h.handle(&q, &s, &open("x"), &ctx).await.unwrap();
    h.handle(&q, &s, &deposit("x", 5), &ctx).await.unwrap();
    // A withdrawal in another stream sneaks in between our read and our append.
    store.hook.sneak_in(
        &StreamName::new("atm-1").unwrap(),
        withdrawn("x", 5).to_new_event().unwrap(),
    );
    let err = h.handle(&q, &s, &withdraw("x", 5), &ctx).await.unwrap_err();
    assert_eq!(
        err.rejection(),
        Some(&AccountError::InsufficientFunds {
            balance: 0,
            requested: 5
        })
    );
    // An event outside the query does not fail the condition.
    store.hook.sneak_in(
        &StreamName::new("atm-1").unwrap(),
        deposited("other", 5).to_new_event().unwrap(),
    );
    let outcome = h.handle(&q, &s, &deposit("x", 2), &ctx).await.unwrap();
    assert_eq!(outcome.attempts, 1);
    // Every attempt conflicting ends in Conflict.
    for _ in 0..2 {
        store
            .hook
            .sneak_in(&s, deposited("x", 1).to_new_event().unwrap());
    }
    let err = h.handle(&q, &s, &deposit("x", 1), &ctx).await.unwrap_err();
    assert!(
        matches!(err, CommandError::Conflict { attempts: 2, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_empty_read_conditions_on_the_head_and_a_replay_appends_nothing() {
    let store = Arc::new(Interleave::default());
    let h = DecisionHandler::new(store.clone(), Bank);
    let other = StreamName::new("misc-1").unwrap();
    store
        .append(
            &other,
            ExpectedRevision::Any,
            vec![opened("z").to_new_event().unwrap()],
        )
        .await
        .unwrap();
    let loaded = h.load(&account_query("x")).await.unwrap();
    assert_eq!(loaded.after, store.head_position().await.unwrap());
    assert_eq!(loaded.events_folded, 0);

    let ctx = CommandContext::new().id_seed(Uuid::now_v7());
    let s = StreamName::new("accounts-x").unwrap();
    let first = h
        .handle(&account_query("x"), &s, &open("x"), &ctx)
        .await
        .unwrap();
    let appends = *store.hook.appends.lock().unwrap();
    let again = h
        .handle(&account_query("x"), &s, &open("x"), &ctx)
        .await
        .unwrap();
    assert!(again.already_applied);
    assert_eq!(again.position, first.position);
    assert_eq!(*store.hook.appends.lock().unwrap(), appends);
}
