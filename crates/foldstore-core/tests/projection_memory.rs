//! The projection runtime over the in-memory store: live following, graceful stop,
//! rebuild, lag, failing handlers and two runners on one checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use foldstore_core::projection::{
    Checkpointed, HandlerError, InMemoryCheckpointStore, Projection, ProjectionError,
    ProjectionRunner, Stopper,
};
use foldstore_core::{
    EventFilter, EventStore, ExpectedRevision, InMemoryStore, NewEvent, RecordedEvent, StreamName,
};

/// Sums `amount` per stream; fails on an event of type `Poison`.
#[derive(Debug, Default, Clone, PartialEq)]
struct Sums(BTreeMap<String, i64>);

#[async_trait]
impl Projection for Sums {
    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        if event.event_type == "Poison" {
            return Err("poisoned event".into());
        }
        let v: serde_json::Value = event.json()?;
        *self.0.entry(event.stream.to_string()).or_default() += v["amount"].as_i64().unwrap_or(0);
        Ok(())
    }
    async fn reset(&mut self) -> Result<(), HandlerError> {
        self.0.clear();
        Ok(())
    }
}

async fn deposit(store: &InMemoryStore, stream: &str, amount: i64) {
    let s = StreamName::new(stream).unwrap();
    let e = NewEvent::json("Deposited", &serde_json::json!({ "amount": amount })).unwrap();
    store
        .append(&s, ExpectedRevision::Any, vec![e])
        .await
        .unwrap();
}

fn runner(
    store: &InMemoryStore,
    checkpoints: &InMemoryCheckpointStore,
) -> ProjectionRunner<Checkpointed<Sums, InMemoryCheckpointStore>> {
    let target = Checkpointed::new("sums", Sums::default(), checkpoints.clone()).unwrap();
    ProjectionRunner::new(Arc::new(store.clone()), target)
        .filter(EventFilter::category("account").unwrap())
        .batch_size(3)
}

#[tokio::test]
async fn follows_live_stops_gracefully_and_resumes_from_its_checkpoint() {
    let store = InMemoryStore::new();
    let checkpoints = InMemoryCheckpointStore::new();
    for i in 0..10 {
        deposit(&store, &format!("account-{}", i % 3), 1).await;
        deposit(&store, "other-1", 100).await; // filtered out
    }
    let mut r = runner(&store, &checkpoints);
    let monitor = r.monitor();
    let stopper = Stopper::new();
    let signal = stopper.signal();
    let task = tokio::spawn(async move { r.run(signal).await.map(|_| r) });
    while monitor.status().events_applied < 10 {
        tokio::task::yield_now().await;
    }
    // Live: an event committed while the runner waits.
    deposit(&store, "account-0", 5).await;
    while monitor.status().events_applied < 11 {
        tokio::task::yield_now().await;
    }
    assert!(monitor.status().active);
    stopper.stop();
    let r = task.await.unwrap().unwrap();
    assert!(!monitor.status().active);
    let sums = r.target().projection().clone();
    assert_eq!(sums.0["account-0"], 4 + 5);
    assert_eq!(sums.0["account-1"], 3);
    assert!(!sums.0.contains_key("other-1"));
    let lag = monitor.lag(100).await.unwrap();
    assert_eq!(lag.events_behind, 0);
    assert_eq!(lag.oldest_unapplied_at, None);

    // Events while stopped: lag shows them; a new runner resumes from the checkpoint
    // (its in-memory read model starts empty, so it only sees the new events).
    deposit(&store, "account-2", 7).await;
    deposit(&store, "account-2", 7).await;
    let lag = monitor.lag(100).await.unwrap();
    assert_eq!(lag.events_behind, 2);
    assert!(lag.oldest_unapplied_at.is_some());
    let mut resumed = runner(&store, &checkpoints);
    resumed.catch_up().await.unwrap();
    assert_eq!(
        resumed.target().projection().0,
        BTreeMap::from([("account-2".to_owned(), 14)])
    );

    // Rebuild from zero gives the full model.
    resumed.rebuild().await.unwrap();
    assert_eq!(resumed.target().projection().0["account-2"], 3 + 14);
    assert_eq!(resumed.target().projection().0["account-0"], 9);
}

#[tokio::test]
async fn a_failing_handler_records_nothing_past_the_last_good_batch() {
    let store = InMemoryStore::new();
    let checkpoints = InMemoryCheckpointStore::new();
    for _ in 0..4 {
        deposit(&store, "account-1", 1).await;
    }
    let s = StreamName::new("account-1").unwrap();
    store
        .append(
            &s,
            ExpectedRevision::Any,
            vec![NewEvent::json("Poison", &()).unwrap()],
        )
        .await
        .unwrap();
    let mut r = runner(&store, &checkpoints);
    let err = r.catch_up().await.unwrap_err();
    assert!(
        matches!(err, ProjectionError::Handler { ref event_type, .. } if event_type == "Poison"),
        "{err}"
    );
    // Batches of 3: the first batch (positions 1..=3) was recorded, the second was not.
    use foldstore_core::projection::CheckpointStore;
    assert_eq!(
        checkpoints.load("sums").await.unwrap(),
        Some(foldstore_core::Position::new(3))
    );
}

#[tokio::test]
async fn a_second_runner_on_a_moved_checkpoint_is_refused() {
    let store = InMemoryStore::new();
    let checkpoints = InMemoryCheckpointStore::new();
    deposit(&store, "account-1", 1).await;
    let mut first = runner(&store, &checkpoints);
    let mut second = runner(&store, &checkpoints);
    // Both read the empty checkpoint; the first records its batch, the second's
    // compare-and-set then fails instead of counting the event twice.
    use foldstore_core::projection::ProjectionTarget;
    let events = store.read_all(Default::default()).await.unwrap();
    first.target_mut().apply_batch(None, &events).await.unwrap();
    let err = second
        .target_mut()
        .apply_batch(None, &events)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProjectionError::CheckpointMoved { .. }),
        "{err}"
    );
}
