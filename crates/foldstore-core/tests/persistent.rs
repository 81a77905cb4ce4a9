//! Persistent subscriptions over the in-memory store: many competing consumers, parking
//! and replay, timeouts, restarts from the stored checkpoint, and two processes
//! sharing one group's lock.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foldstore_core::persistent::{
    EventKey, NackAction, PatternFilter, PatternSubject, PersistentError, PersistentSettings,
    PersistentSubscriptions, Strategy, Target, in_process_locks,
};
use foldstore_core::projection::InMemoryLocks;
use foldstore_core::{EventStore, ExpectedRevision, InMemoryStore, NewEvent, StreamName};

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn fill(store: &InMemoryStore, streams: usize, per_stream: usize) -> Result<(), Error> {
    for s in 0..streams {
        let name = StreamName::new(format!("order-{s}"))?;
        let events = (0..per_stream)
            .map(|i| NewEvent::json("Placed", &i))
            .collect::<Result<Vec<_>, _>>()?;
        store.append(&name, ExpectedRevision::Any, events).await?;
    }
    Ok(())
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// 64 consumers share 50,000 events: each is acked, none is held by two at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_consumers_ack_fifty_thousand_events_none_lost_none_doubled() -> Result<(), Error>
{
    const EVENTS: usize = 50_000;
    let store = Arc::new(InMemoryStore::new());
    fill(&store, 100, EVENTS / 100).await?;
    let subs = PersistentSubscriptions::open(store.clone()).await?;
    let settings = PersistentSettings {
        message_timeout_ms: 60_000,
        ..PersistentSettings::default()
    };
    subs.create(&Target::All, "workers", settings).await?;

    let in_flight = Arc::new(Mutex::new(HashSet::new()));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let deliveries = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut consumer = subs.connect(&Target::All, "workers", 10).await?;
        let (in_flight, acked, deliveries, done) = (
            in_flight.clone(),
            acked.clone(),
            deliveries.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while let Some(delivered) = consumer.next().await {
                let position = delivered.event.position;
                assert!(
                    in_flight.lock().unwrap().insert(position),
                    "event at {position:?} is in flight at two consumers"
                );
                deliveries.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
                in_flight.lock().unwrap().remove(&position);
                let total = {
                    let mut acked = acked.lock().unwrap();
                    acked.insert(position);
                    acked.len()
                };
                consumer.ack(&[delivered.key]);
                if total == EVENTS {
                    done.notify_one();
                }
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(120), done.notified()).await?;
    let elapsed = started.elapsed();
    println!(
        "64 consumers acked {EVENTS} events in {elapsed:?}: {:.0} events/s",
        EVENTS as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(acked.lock().unwrap().len(), EVENTS);
    assert_eq!(
        deliveries.load(Ordering::Relaxed),
        EVENTS,
        "no event was delivered twice"
    );
    subs.shutdown().await;
    for task in tasks {
        task.await?;
    }
    Ok(())
}

/// A nacked-park event lands in the parked stream and comes back on replay.
#[tokio::test]
async fn nack_park_then_replay_delivers_the_event_again() -> Result<(), Error> {
    let store = Arc::new(InMemoryStore::new());
    fill(&store, 1, 3).await?;
    let target = Target::Stream(StreamName::new("order-0")?);
    let subs = PersistentSubscriptions::open(store.clone()).await?;
    subs.create(&target, "g", PersistentSettings::default())
        .await?;
    let mut consumer = subs.connect(&target, "g", 10).await?;
    for _ in 0..3 {
        let d = consumer.next().await.expect("event");
        if d.event.revision == 1 {
            consumer.nack(&[d.key], NackAction::Park);
        } else {
            consumer.ack(&[d.key]);
        }
    }
    eventually("one parked event", || async {
        subs.info(&target, "g").await.unwrap().parked == 1
    })
    .await;
    let parked = store
        .read_stream(
            &foldstore_core::persistent::parked_stream(&target, "g")?,
            foldstore_core::ReadStreamOptions::forwards(),
        )
        .await?;
    assert_eq!(parked[0].event_type, "PersistentSubscriptionParked");

    assert_eq!(subs.replay_parked(&target, "g").await?, 1);
    let again = consumer.next().await.expect("the replayed event");
    assert_eq!(again.event.revision, 1);
    assert!(matches!(again.key, EventKey::Replay(0)));
    consumer.ack(&[again.key]);
    eventually("the parked stream emptied by the replay", || async {
        subs.info(&target, "g").await.unwrap().parked == 0
    })
    .await;
    let info = subs.info(&target, "g").await?;
    assert_eq!(
        info.stats.checkpoint, None,
        "checkpoints wait for the count or time"
    );
    subs.shutdown().await;
    Ok(())
}

/// An event not acked in time is delivered again, then parked after max retries.
#[tokio::test]
async fn a_timeout_retries_then_parks() -> Result<(), Error> {
    let store = Arc::new(InMemoryStore::new());
    fill(&store, 1, 1).await?;
    let target = Target::Stream(StreamName::new("order-0")?);
    let subs = PersistentSubscriptions::open(store.clone()).await?;
    let settings = PersistentSettings {
        message_timeout_ms: 40,
        max_retry_count: 2,
        ..PersistentSettings::default()
    };
    subs.create(&target, "g", settings).await?;
    let mut consumer = subs.connect(&target, "g", 1).await?;
    for expected in 0..=2 {
        let d = consumer.next().await.expect("event");
        assert_eq!(d.retry_count, expected);
    }
    eventually("the event parked", || async {
        subs.info(&target, "g").await.unwrap().parked == 1
    })
    .await;
    subs.shutdown().await;
    Ok(())
}

/// After a graceful restart the group resumes right after its checkpoint; after a
/// crash it resumes after the last stored one, delivering some events again but
/// losing none.
#[tokio::test]
async fn a_restart_resumes_from_the_checkpoint_without_losing_events() -> Result<(), Error> {
    let store = Arc::new(InMemoryStore::new());
    fill(&store, 1, 100).await?;
    let target = Target::Stream(StreamName::new("order-0")?);
    let settings = PersistentSettings {
        max_checkpoint_count: 10,
        strategy: Strategy::DispatchToSingle,
        ..PersistentSettings::default()
    };

    let subs = PersistentSubscriptions::open(store.clone()).await?;
    subs.create(&target, "g", settings).await?;
    let mut consumer = subs.connect(&target, "g", 1).await?;
    for revision in 0..35 {
        let d = consumer.next().await.expect("event");
        assert_eq!(d.event.revision, revision);
        consumer.ack(&[d.key]);
    }
    eventually("a checkpoint at 29", || async {
        subs.info(&target, "g").await.unwrap().stats.checkpoint == Some(29)
    })
    .await;
    // A crash: no final checkpoint.
    drop(consumer);
    drop(subs);

    let subs = PersistentSubscriptions::open(store.clone()).await?;
    let mut consumer = subs.connect(&target, "g", 1).await?;
    let d = consumer.next().await.expect("event");
    assert_eq!(d.event.revision, 30, "resumes after the stored checkpoint");
    consumer.ack(&[d.key]);
    let mut next = 31;
    while next < 60 {
        let d = consumer.next().await.expect("event");
        assert_eq!(d.event.revision, next);
        consumer.ack(&[d.key]);
        next += 1;
    }
    // A graceful stop writes the checkpoint of every finished event.
    drop(consumer);
    subs.shutdown().await;
    drop(subs);

    let subs = PersistentSubscriptions::open(store.clone()).await?;
    let mut consumer = subs.connect(&target, "g", 1).await?;
    let d = consumer.next().await.expect("event");
    assert_eq!(d.event.revision, 60);
    let groups = subs.list(None).await?;
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].stats.checkpoint, Some(59));
    subs.shutdown().await;
    Ok(())
}

/// Two processes over one store share the group's lock: one serves while the other's
/// consumers wait, and the other takes over when the first stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_serves_a_group_the_other_takes_over() -> Result<(), Error> {
    let store = Arc::new(InMemoryStore::new());
    fill(&store, 4, 50).await?;
    let locks = InMemoryLocks::new();
    let factory = in_process_locks(locks);
    let a = PersistentSubscriptions::open_with_locks(store.clone(), factory.clone()).await?;
    a.create(&Target::All, "g", PersistentSettings::default())
        .await?;
    let mut on_a = a.connect(&Target::All, "g", 5).await?;
    eventually("a serves", || async {
        a.info(&Target::All, "g").await.unwrap().stats.serving
    })
    .await;

    let b = PersistentSubscriptions::open_with_locks(store.clone(), factory).await?;
    let mut on_b = b.connect(&Target::All, "g", 5).await?;
    let first = on_a.next().await.expect("a delivers");
    on_a.ack(&[first.key]);
    assert!(!b.info(&Target::All, "g").await?.stats.serving);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), on_b.next())
            .await
            .is_err(),
        "b delivers nothing while a holds the lock"
    );

    drop(on_a);
    a.shutdown().await;
    let mut seen = HashSet::new();
    while seen.len() < 199 {
        let d = on_b.next().await.expect("b delivers after a stopped");
        assert_ne!(d.event.position, first.event.position, "a acked this one");
        seen.insert(d.event.position);
        on_b.ack(&[d.key]);
    }
    b.shutdown().await;
    Ok(())
}

/// A group with a maximum refuses the consumer beyond it, and admits one again once a
/// consumer left.
#[tokio::test]
async fn a_group_refuses_consumers_beyond_its_maximum() -> Result<(), Error> {
    let store = Arc::new(InMemoryStore::new());
    let target = Target::Stream(StreamName::new("order-0")?);
    let subs = PersistentSubscriptions::open(store.clone()).await?;
    let settings = PersistentSettings {
        max_subscriber_count: 1,
        ..PersistentSettings::default()
    };
    subs.create(&target, "g", settings).await?;
    let first = subs.connect(&target, "g", 1).await?;
    let refused = subs.connect(&target, "g", 1).await;
    assert!(
        matches!(refused, Err(PersistentError::MaxSubscribers { max: 1, .. })),
        "{refused:?}"
    );
    drop(first);
    eventually("the first consumer gone", || async {
        subs.info(&target, "g")
            .await
            .unwrap()
            .stats
            .consumers
            .is_empty()
    })
    .await;
    subs.connect(&target, "g", 1).await?;
    subs.shutdown().await;
    Ok(())
}

/// A `$all` group with a regex filter receives only the events it matches.
#[tokio::test]
async fn an_all_group_applies_its_pattern_filter() -> Result<(), Error> {
    let store = Arc::new(InMemoryStore::new());
    fill(&store, 3, 2).await?;
    let subs = PersistentSubscriptions::open(store.clone()).await?;
    let settings = PersistentSettings {
        pattern: Some(PatternFilter::regex(
            PatternSubject::StreamName,
            "^(?!order-1$)",
        )),
        ..PersistentSettings::default()
    };
    subs.create(&Target::All, "g", settings).await?;
    let mut consumer = subs.connect(&Target::All, "g", 10).await?;
    let mut streams = Vec::new();
    for _ in 0..4 {
        let d = consumer.next().await.expect("event");
        streams.push(d.event.stream.as_str().to_owned());
        consumer.ack(&[d.key]);
    }
    assert_eq!(streams, ["order-0", "order-0", "order-2", "order-2"]);
    let bad = PersistentSettings {
        pattern: Some(PatternFilter::regex(PatternSubject::EventType, "(")),
        ..PersistentSettings::default()
    };
    let refused = subs.create(&Target::All, "bad", bad).await;
    assert!(
        matches!(refused, Err(PersistentError::InvalidSettings(_))),
        "{refused:?}"
    );
    subs.shutdown().await;
    Ok(())
}

/// A replay that stops at a revision of the parked stream replays the events before
/// it; the others stay parked.
#[tokio::test]
async fn a_replay_stops_at_the_given_parked_revision() -> Result<(), Error> {
    let store = Arc::new(InMemoryStore::new());
    fill(&store, 1, 3).await?;
    let target = Target::Stream(StreamName::new("order-0")?);
    let subs = PersistentSubscriptions::open(store.clone()).await?;
    subs.create(&target, "g", PersistentSettings::default())
        .await?;
    let mut consumer = subs.connect(&target, "g", 10).await?;
    for _ in 0..3 {
        let d = consumer.next().await.expect("event");
        consumer.nack(&[d.key], NackAction::Park);
    }
    eventually("three parked", || async {
        subs.info(&target, "g").await.unwrap().parked == 3
    })
    .await;
    assert_eq!(subs.replay_parked_until(&target, "g", Some(2)).await?, 2);
    for revision in 0..2 {
        let d = consumer.next().await.expect("replayed");
        assert_eq!(d.event.revision, revision);
        consumer.ack(&[d.key]);
    }
    eventually("one left parked", || async {
        subs.info(&target, "g").await.unwrap().parked == 1
    })
    .await;
    subs.shutdown().await;
    Ok(())
}

/// A restart disconnects the consumers and serves the groups again from their
/// checkpoints.
#[tokio::test]
async fn a_restart_drops_consumers_and_serves_again() -> Result<(), Error> {
    let store = Arc::new(InMemoryStore::new());
    fill(&store, 1, 3).await?;
    let target = Target::Stream(StreamName::new("order-0")?);
    let subs = PersistentSubscriptions::open(store.clone()).await?;
    subs.create(&target, "g", PersistentSettings::default())
        .await?;
    let mut consumer = subs.connect(&target, "g", 10).await?;
    let d = consumer.next().await.expect("event");
    consumer.ack(&[d.key]);
    subs.restart().await?;
    let mut rest = Vec::new();
    while let Some(d) = consumer.next().await {
        rest.push(d.event.revision);
    }
    assert!(rest.len() <= 2, "the old consumer ends: {rest:?}");
    let mut again = subs.connect(&target, "g", 10).await?;
    let d = again.next().await.expect("served again");
    assert_eq!(
        d.event.revision, 1,
        "after the checkpoint the restart wrote"
    );
    subs.shutdown().await;
    Ok(())
}

/// A polling client: connects, takes what waits, pauses, and acks by key without its
/// consumer. A paused consumer keeps its events (nobody else gets them) and is given
/// no more; its events come back after the message timeout.
#[tokio::test]
async fn a_paused_consumer_keeps_what_it_took_and_gets_nothing_more() -> Result<(), Error> {
    let store = Arc::new(InMemoryStore::new());
    fill(&store, 1, 6).await?;
    let subs = PersistentSubscriptions::open(store.clone()).await?;
    let target = Target::Stream(StreamName::new("order-0")?);
    let settings = PersistentSettings {
        message_timeout_ms: 300,
        ..PersistentSettings::default()
    };
    subs.create(&target, "poll", settings).await?;

    let mut first = subs.connect(&target, "poll", 4).await?;
    let one = tokio::time::timeout(Duration::from_secs(5), first.next())
        .await?
        .expect("an event");
    first.pause().await;
    let mut taken = vec![one];
    while let Some(e) = first.try_next() {
        taken.push(e);
    }
    assert_eq!(
        taken.len(),
        4,
        "the pause hands over what waits, up to the buffer"
    );

    let mut second = subs.connect(&target, "poll", 10).await?;
    second.pause().await;
    let mut rest = Vec::new();
    while let Some(e) = second.try_next() {
        rest.push(e);
    }
    let revisions: Vec<u64> = rest.iter().map(|e| e.event.revision).collect();
    assert_eq!(
        revisions,
        [4, 5],
        "the first poller's events are not given again"
    );

    // Acks by key, without a consumer; nothing more reaches the paused consumers.
    subs.ack(&target, "poll", &[taken[0].key, taken[1].key])
        .await?;
    subs.nack(
        &target,
        "poll",
        &[rest[0].key, rest[1].key],
        NackAction::Skip,
    )
    .await?;
    assert!(first.try_next().is_none() && second.try_next().is_none());

    // The two taken and not acked come back after the timeout, to a new poller.
    let mut third = subs.connect(&target, "poll", 10).await?;
    let mut again = Vec::new();
    while again.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(5), third.next())
            .await?
            .expect("redelivered");
        again.push((e.event.revision, e.retry_count));
    }
    again.sort();
    assert_eq!(
        again,
        [(taken[2].event.revision, 1), (taken[3].event.revision, 1)]
    );
    assert!(matches!(
        subs.ack(&Target::All, "nope", &[EventKey::Source(0)]).await,
        Err(foldstore_core::persistent::PersistentError::NotFound { .. })
    ));
    subs.shutdown().await;
    Ok(())
}
