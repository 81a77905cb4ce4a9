//! Snapshots in the command handler: taken every N events, used on load, and ignored
//! (then replaced) when their schema version or data does not fit the code.

use std::sync::Arc;

use foldstore_core::*;
use uuid::Uuid;

use crate::bank::*;

fn stream() -> StreamName {
    StreamName::new("account-s").unwrap()
}

async fn deposits(handler: &CommandHandler<Bank>, n: u64) {
    let ctx = CommandContext::new();
    for _ in 0..n {
        handler
            .handle(&stream(), &deposit("s", 1), &ctx)
            .await
            .unwrap();
    }
}

fn handler(store: &Arc<InMemoryStore>, every: u64) -> CommandHandler<Bank> {
    CommandHandler::new(store.clone(), Bank)
        .with_snapshots(store.clone(), SnapshotPolicy::every(every))
}

#[tokio::test]
async fn a_snapshot_every_n_events_and_loads_start_from_it() {
    let store = Arc::new(InMemoryStore::new());
    let h = handler(&store, 10);
    h.handle(&stream(), &open("s"), &CommandContext::new())
        .await
        .unwrap();
    deposits(&h, 24).await; // revisions 0..=24
    let snap = store
        .load_snapshot(&stream(), "Account")
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(snap.revision, 19, "taken at the 20th event");
    assert_eq!(snap.schema_version, 1);
    let loaded = h.load(&stream()).await.unwrap();
    assert_eq!(loaded.snapshot_revision, Some(19));
    assert_eq!(loaded.events_folded, 5);
    assert_eq!(loaded.revision, Some(24));
    assert_eq!(loaded.state.balance, 24);
    // The same state as a full replay.
    let replay = CommandHandler::new(store.clone(), Bank)
        .load(&stream())
        .await
        .unwrap();
    assert_eq!(replay.state, loaded.state);
}

#[tokio::test]
async fn a_snapshot_of_another_schema_version_is_ignored_and_replaced() {
    let store = Arc::new(InMemoryStore::new());
    let h = handler(&store, 1000);
    h.handle(&stream(), &open("s"), &CommandContext::new())
        .await
        .unwrap();
    deposits(&h, 3).await;
    // A snapshot by older code: another version, and a state that would be wrong.
    let wrong = serde_json::to_vec(&Account {
        open: true,
        balance: 999,
    })
    .unwrap();
    store
        .save_snapshot(Snapshot::new(stream(), "Account", 0, 3, wrong))
        .await
        .unwrap();
    let loaded = h.load(&stream()).await.unwrap();
    assert_eq!(loaded.state.balance, 3, "replayed, not the old snapshot");
    assert_eq!(loaded.snapshot_revision, None);
    let snap = store
        .load_snapshot(&stream(), "Account")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((snap.schema_version, snap.revision), (1, 3), "replaced");
    let state: Account = serde_json::from_slice(&snap.data).unwrap();
    assert_eq!(state.balance, 3);
}

#[tokio::test]
async fn a_snapshot_that_does_not_decode_is_ignored_and_replaced() {
    let store = Arc::new(InMemoryStore::new());
    let h = handler(&store, 1000);
    h.handle(&stream(), &open("s"), &CommandContext::new())
        .await
        .unwrap();
    deposits(&h, 2).await;
    store
        .save_snapshot(Snapshot::new(
            stream(),
            "Account",
            1,
            2,
            b"{\"nope\":1}".to_vec(),
        ))
        .await
        .unwrap();
    let loaded = h.load(&stream()).await.unwrap();
    assert_eq!(loaded.state.balance, 2);
    assert_eq!(loaded.snapshot_revision, None);
    let snap = store
        .load_snapshot(&stream(), "Account")
        .await
        .unwrap()
        .unwrap();
    assert!(serde_json::from_slice::<Account>(&snap.data).is_ok());
    assert_eq!(h.load(&stream()).await.unwrap().snapshot_revision, Some(2));
}

#[tokio::test]
async fn a_replay_is_recognised_even_when_its_events_are_under_a_snapshot() {
    let store = Arc::new(InMemoryStore::new());
    let h = handler(&store, 2);
    let ctx = CommandContext::new().id_seed(Uuid::now_v7());
    h.handle(&stream(), &open("s"), &ctx).await.unwrap();
    deposits(&h, 5).await;
    assert!(h.load(&stream()).await.unwrap().snapshot_revision.is_some());
    let again = h.handle(&stream(), &open("s"), &ctx).await.unwrap();
    assert!(again.already_applied);
    assert_eq!(again.next_expected_revision, Some(0));
    assert_eq!(h.load(&stream()).await.unwrap().revision, Some(5));
}

#[tokio::test]
async fn a_snapshot_from_before_a_soft_delete_is_not_folded_into_the_new_stream() {
    let store = Arc::new(InMemoryStore::new());
    let h = handler(&store, 2);
    h.handle(&stream(), &open("s"), &CommandContext::new())
        .await
        .unwrap();
    deposits(&h, 3).await;
    assert!(h.load(&stream()).await.unwrap().snapshot_revision.is_some());
    store
        .delete_stream(&stream(), ExpectedRevision::Any)
        .await
        .unwrap();
    // Written again after the delete (revisions go on from 4), by a handler without
    // snapshots, so the old snapshot is still the latest.
    let plain = CommandHandler::new(store.clone(), Bank);
    plain
        .handle(&stream(), &open("s"), &CommandContext::new())
        .await
        .unwrap();
    plain
        .handle(&stream(), &deposit("s", 1), &CommandContext::new())
        .await
        .unwrap();
    let old = store
        .load_snapshot(&stream(), "Account")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.revision, 3);
    let with_snapshots = h.load(&stream()).await.unwrap();
    let replay = CommandHandler::new(store.clone(), Bank)
        .load(&stream())
        .await
        .unwrap();
    assert_eq!(with_snapshots.state, replay.state);
    assert_eq!(replay.state.balance, 1);
}
