//! A saga over the SQLite store across a real restart (issue 5): the store is closed
//! and reopened between runs. A timeout scheduled before the restart fires once after
//! it, commands dispatched before it are not written again, and a replay from the
//! start writes nothing new.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use foldstore_core::projection::HandlerError;
use foldstore_core::saga::{
    CommandBus, DispatchContext, DispatchError, ManualClock, Reaction, Saga, SagaOptions,
    SagaRunner,
};
use foldstore_core::{
    EventFilter, EventStore, ExpectedRevision, NewEvent, ReadAllOptions, ReadStreamOptions,
    RecordedEvent, StreamName,
};
use foldstore_sqlite::{SqliteOptions, SqliteStore};

/// On `Opened`: send a welcome now, and a reminder in a day unless `Verified` comes.
struct Onboarding {
    epoch: DateTime<Utc>,
}

impl Saga for Onboarding {
    type Command = String;
    fn name(&self) -> &str {
        "onboarding"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::category("user").unwrap()
    }
    fn react(&self, event: &RecordedEvent) -> Result<Reaction<String>, HandlerError> {
        let user = event.stream.id();
        Ok(match event.event_type.as_str() {
            "Opened" => Reaction::new().command(format!("welcome {user}")).schedule(
                format!("remind-{user}"),
                self.epoch + chrono::Duration::days(1),
                format!("remind {user}"),
            ),
            "Verified" => Reaction::new().cancel(format!("remind-{user}")),
            _ => Reaction::new(),
        })
    }
}

/// Writes each command as an event of `mail-<user>` with the context's id.
#[derive(Clone)]
struct Mailer {
    store: SqliteStore,
    dispatched: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl CommandBus<String> for Mailer {
    async fn dispatch(
        &self,
        command: String,
        context: DispatchContext,
    ) -> Result<(), DispatchError> {
        self.dispatched.lock().unwrap().push(command.clone());
        let user = command.rsplit(' ').next().unwrap_or_default();
        let stream = StreamName::new(format!("mail-{user}")).unwrap();
        let event = NewEvent::json("Mailed", &command)
            .unwrap()
            .with_id(context.event_id(0))
            .with_metadata(context.metadata());
        self.store
            .append(&stream, ExpectedRevision::Any, vec![event])
            .await
            .map(|_| ())
            .map_err(|e| DispatchError::transient(e.to_string()))
    }
}

fn epoch() -> DateTime<Utc> {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

async fn mails(store: &SqliteStore, user: &str) -> Vec<String> {
    let stream = StreamName::new(format!("mail-{user}")).unwrap();
    match store
        .read_stream(&stream, ReadStreamOptions::forwards())
        .await
    {
        Ok(events) => events.iter().map(|e| e.json::<String>().unwrap()).collect(),
        Err(_) => Vec::new(),
    }
}

async fn run_once(
    path: &std::path::Path,
    clock: &ManualClock,
    options: SagaOptions,
) -> (SqliteStore, Vec<String>) {
    let store = SqliteStore::open(path, SqliteOptions::default())
        .await
        .unwrap();
    let bus = Mailer {
        store: store.clone(),
        dispatched: Arc::default(),
    };
    let mut runner = SagaRunner::new(
        Arc::new(store.clone()),
        Onboarding { epoch: epoch() },
        bus.clone(),
    )
    .unwrap()
    .clock(clock.clone())
    .options(options);
    runner.catch_up().await.unwrap();
    let dispatched = bus.dispatched.lock().unwrap().clone();
    (store, dispatched)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_scheduled_before_a_restart_fires_once_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let clock = ManualClock::starting_at(epoch());
    {
        let store = SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap();
        for (user, event_type) in [("ada", "Opened"), ("bob", "Opened"), ("bob", "Verified")] {
            let stream = StreamName::new(format!("user-{user}")).unwrap();
            let e = NewEvent::json(event_type, &()).unwrap();
            store
                .append(&stream, ExpectedRevision::Any, vec![e])
                .await
                .unwrap();
        }
        store.close().await.unwrap();
    }
    let (store, dispatched) = run_once(&path, &clock, SagaOptions::default()).await;
    assert_eq!(dispatched, ["welcome ada", "welcome bob"]);
    store.close().await.unwrap();

    // Restart a day later: the reminder scheduled before the restart fires, once; the
    // cancelled one does not; the welcomes are not sent again.
    clock.advance(chrono::Duration::days(1));
    let (store, dispatched) = run_once(&path, &clock, SagaOptions::default()).await;
    assert_eq!(dispatched, ["remind ada"]);
    assert_eq!(mails(&store, "ada").await, ["welcome ada", "remind ada"]);
    assert_eq!(mails(&store, "bob").await, ["welcome bob"]);
    let written = store
        .read_all(ReadAllOptions::forwards())
        .await
        .unwrap()
        .len();
    store.close().await.unwrap();

    // Another restart fires nothing; a replay from the start re-dispatches the
    // welcomes with the same ids and writes nothing new.
    let (store, dispatched) = run_once(&path, &clock, SagaOptions::default()).await;
    assert!(dispatched.is_empty());
    store.close().await.unwrap();
    let replay = SagaOptions {
        from_start: true,
        ..SagaOptions::default()
    };
    let (store, dispatched) = run_once(&path, &clock, replay).await;
    assert_eq!(dispatched, ["welcome ada", "welcome bob"]);
    assert_eq!(
        store
            .read_all(ReadAllOptions::forwards())
            .await
            .unwrap()
            .len(),
        written
    );
    store.close().await.unwrap();
}
