//! The command handler: correlation metadata, retries on conflict, idempotent replays.

use std::sync::Arc;
use std::time::Duration;

use foldstore_core::*;
use uuid::Uuid;

use crate::bank::*;
use crate::interleave::Interleave;

fn stream() -> StreamName {
    StreamName::new("account-a").unwrap()
}

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(attempts)
        .base_delay(Duration::from_micros(50))
}

async fn all_events(store: &dyn EventStore) -> Vec<RecordedEvent> {
    store
        .read_stream(&stream(), ReadStreamOptions::forwards())
        .await
        .unwrap()
}

#[tokio::test]
async fn correlation_and_causation_ids_reach_every_event() {
    let store = Arc::new(InMemoryStore::new());
    let handler = CommandHandler::new(store.clone(), Bank);
    let (correlation, causation) = (Uuid::now_v7(), Uuid::now_v7());
    let ctx = CommandContext::new()
        .correlation_id(correlation)
        .causation_id(causation)
        .with("tenant", "acme");
    handler.handle(&stream(), &open("a"), &ctx).await.unwrap();
    handler
        .handle(&stream(), &deposit("a", 3), &ctx)
        .await
        .unwrap();
    let events = all_events(store.as_ref()).await;
    assert_eq!(events.len(), 2);
    for e in events {
        assert_eq!(e.metadata.correlation_id(), Some(correlation));
        assert_eq!(e.metadata.causation_id(), Some(causation));
        assert_eq!(e.metadata.get("tenant").unwrap(), "acme");
        assert_eq!(e.metadata.get(SCHEMA_VERSION).unwrap(), 1);
        assert_eq!(e.tags, ["account:a"]);
    }
}

#[tokio::test]
async fn a_write_between_load_and_append_is_retried_on_the_new_state() {
    let store = Interleave::default();
    let handler = CommandHandler::new(Arc::new(store.clone()), Bank).with_retry(fast_retry(3));
    let ctx = CommandContext::new();
    handler.handle(&stream(), &open("a"), &ctx).await.unwrap();
    handler
        .handle(&stream(), &deposit("a", 10), &ctx)
        .await
        .unwrap();

    // Someone withdraws 8 just before our append of "withdraw 5".
    store
        .hook
        .sneak_in(&stream(), withdrawn("a", 8).to_new_event().unwrap());
    let err = handler
        .handle(&stream(), &withdraw("a", 5), &ctx)
        .await
        .unwrap_err();
    // The retry decided again on balance 2: refused, and nothing of ours written.
    assert_eq!(
        err.rejection(),
        Some(&AccountError::InsufficientFunds {
            balance: 2,
            requested: 5
        })
    );
    assert_eq!(all_events(&store).await.len(), 3);

    store
        .hook
        .sneak_in(&stream(), deposited("a", 1).to_new_event().unwrap());
    let outcome = handler
        .handle(&stream(), &withdraw("a", 2), &ctx)
        .await
        .unwrap();
    assert_eq!(outcome.attempts, 2);
    assert_eq!(outcome.next_expected_revision, Some(4));
    assert_eq!(handler.load(&stream()).await.unwrap().state.balance, 1);
}

#[tokio::test]
async fn conflicts_after_the_last_attempt_are_reported() {
    let store = Interleave::default();
    let handler = CommandHandler::new(Arc::new(store.clone()), Bank).with_retry(fast_retry(3));
    let ctx = CommandContext::new();
    handler.handle(&stream(), &open("a"), &ctx).await.unwrap();
    for _ in 0..3 {
        store
            .hook
            .sneak_in(&stream(), deposited("a", 1).to_new_event().unwrap());
    }
    let err = handler
        .handle(&stream(), &deposit("a", 5), &ctx)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CommandError::Conflict { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("RetryPolicy"));
    assert_eq!(handler.load(&stream()).await.unwrap().state.balance, 3);
}

#[tokio::test]
async fn a_replayed_command_appends_nothing_and_returns_the_first_outcome() {
    let store = Arc::new(Interleave::default());
    let handler = CommandHandler::new(store.clone(), Bank);
    let seed = Uuid::now_v7();
    let ctx = CommandContext::new().id_seed(seed);

    let first = handler.handle(&stream(), &open("a"), &ctx).await.unwrap();
    assert!(!first.already_applied);
    let stored = all_events(store.as_ref()).await;
    assert_eq!(stored[0].id, deterministic_event_id(seed, 0));

    // Replayed (a saga restarted): the decider would now say AlreadyOpen.
    let again = handler.handle(&stream(), &open("a"), &ctx).await.unwrap();
    assert!(again.already_applied);
    assert_eq!(again.events, first.events);
    assert_eq!(again.next_expected_revision, first.next_expected_revision);
    assert_eq!(again.position, first.position);
    assert_eq!(all_events(store.as_ref()).await.len(), 1);

    // A replay after other events, that the decider would accept again.
    let dep = CommandContext::new().id_seed(Uuid::now_v7());
    let first = handler
        .handle(&stream(), &deposit("a", 5), &dep)
        .await
        .unwrap();
    handler
        .handle(&stream(), &deposit("a", 1), &CommandContext::new())
        .await
        .unwrap();
    let appends_before = *store.hook.appends.lock().unwrap();
    let again = handler
        .handle(&stream(), &deposit("a", 5), &dep)
        .await
        .unwrap();
    assert!(again.already_applied);
    assert_eq!(again.next_expected_revision, first.next_expected_revision);
    assert_eq!(
        *store.hook.appends.lock().unwrap(),
        appends_before,
        "no append call"
    );
    assert_eq!(handler.load(&stream()).await.unwrap().state.balance, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_commands_never_lose_a_deposit() {
    let store = Arc::new(InMemoryStore::new());
    let handler = Arc::new(
        CommandHandler::new(store.clone(), Bank).with_retry(
            RetryPolicy::default()
                .max_attempts(50)
                .base_delay(Duration::from_micros(100)),
        ),
    );
    handler
        .handle(&stream(), &open("a"), &CommandContext::new())
        .await
        .unwrap();
    let tasks = 8;
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks));
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (handler, barrier) = (handler.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut done = 0u64;
            for _ in 0..10 {
                match handler
                    .handle(
                        &stream(),
                        &deposit("a", t as u64 + 1),
                        &CommandContext::new(),
                    )
                    .await
                {
                    Ok(_) => done += t as u64 + 1,
                    Err(CommandError::Conflict { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            done
        }));
    }
    let mut deposited = 0;
    for h in handles {
        deposited += h.await.unwrap();
    }
    // Every acknowledged deposit is in the balance, and nothing else is.
    let loaded = handler.load(&stream()).await.unwrap();
    assert_eq!(loaded.state.balance, deposited);
    assert!(deposited > 0);
}
