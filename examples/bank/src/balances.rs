//! The balances read model: every account's balance, folded from the account events
//! in `$all`. [`BalancesProjection`] keeps one current with the toolkit's projection
//! runner;
//! [`Balances::rebuild`] folds `$all` again from zero, independently, to check it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use foldstore_core::projection::{
    Checkpointed, HandlerError, InMemoryCheckpointStore, Projection, ProjectionError,
    ProjectionRunner, Stopper,
};
use foldstore_core::{EventFilter, EventStore, Position, ReadAllOptions, ReadError, RecordedEvent};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::account::{ACCOUNT_EVENT_TYPES, AccountEvent, AccountId};

/// Events per page when folding `$all`.
const PAGE: usize = 1000;

/// Balances in cents, and the position of the last event folded in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Balances {
    /// Each account's balance. Signed, so that a wrong history shows as a negative one.
    pub balances: BTreeMap<AccountId, i128>,
    /// The last account event applied.
    pub position: Option<Position>,
}

impl Balances {
    /// Applies one event of `$all`; events that are not account events are skipped.
    pub fn apply(&mut self, event: &RecordedEvent) {
        if let Some(e) = AccountEvent::decode(event) {
            *self.balances.entry(e.account()).or_default() += e.delta();
            self.position = Some(event.position);
        }
    }

    /// The sum of all balances.
    pub fn total(&self) -> i128 {
        self.balances.values().sum()
    }

    /// Folds the whole of `$all` from zero.
    pub async fn rebuild(store: &dyn EventStore) -> Result<Balances, ReadError> {
        let mut balances = Balances::default();
        for_each_event(store, |e| balances.apply(e)).await?;
        Ok(balances)
    }
}

/// Calls `f` with every event of `$all`, oldest first, a page at a time.
pub async fn for_each_event(
    store: &dyn EventStore,
    mut f: impl FnMut(&RecordedEvent),
) -> Result<(), ReadError> {
    let mut from = None;
    loop {
        let mut options = ReadAllOptions::forwards().max_count(PAGE);
        options.from = from;
        let page = store.read_all(options).await?;
        page.iter().for_each(&mut f);
        match page.last() {
            Some(last) if page.len() == PAGE => from = Some(last.position.next()),
            _ => return Ok(()),
        }
    }
}

/// The balances read model as a toolkit [`Projection`]: it applies account events
/// and publishes each new state.
pub struct BalancesModel {
    state: watch::Sender<Balances>,
}

#[async_trait]
impl Projection for BalancesModel {
    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        self.state.send_modify(|b| b.apply(event));
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), HandlerError> {
        self.state.send_replace(Balances::default());
        Ok(())
    }
}

/// The balances read model kept current by the toolkit's [`ProjectionRunner`]
/// (account events of `$all`, checkpoint in memory).
pub struct BalancesProjection {
    state: watch::Receiver<Balances>,
    stopper: Stopper,
    task: JoinHandle<Result<(), ProjectionError>>,
}

impl BalancesProjection {
    /// Starts the runner from the first event.
    pub fn start(store: Arc<dyn EventStore>) -> Result<Self, ProjectionError> {
        let (tx, state) = watch::channel(Balances::default());
        let target = Checkpointed::new(
            "balances",
            BalancesModel { state: tx },
            InMemoryCheckpointStore::new(),
        )?;
        let mut runner = ProjectionRunner::new(store, target)
            .filter(EventFilter::all().with_types(ACCOUNT_EVENT_TYPES));
        let stopper = Stopper::new();
        let signal = stopper.signal();
        let task = tokio::spawn(async move { runner.run(signal).await });
        Ok(Self {
            state,
            stopper,
            task,
        })
    }

    /// Waits until every account event at or below `head` has been applied, and
    /// returns the read model then. `None` when the runner stopped first.
    pub async fn caught_up(
        &mut self,
        head: Option<Position>,
        store: &dyn EventStore,
    ) -> Option<Balances> {
        // The last account event at or below `head` is what the model must reach.
        let target = match head {
            None => return Some(self.state.borrow().clone()),
            Some(h) => last_account_event_at_or_below(store, h).await.ok()?,
        };
        let Some(target) = target else {
            return Some(self.state.borrow().clone());
        };
        self.state
            .wait_for(|b| b.position.is_some_and(|p| p >= target))
            .await
            .ok()
            .map(|b| b.clone())
    }

    /// Stops the runner gracefully and returns how its run ended.
    pub async fn stop(self) -> Result<(), ProjectionError> {
        self.stopper.stop();
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ProjectionError::storage("balances", e.to_string())),
        }
    }
}

async fn last_account_event_at_or_below(
    store: &dyn EventStore,
    head: Position,
) -> Result<Option<Position>, ReadError> {
    let mut options = ReadAllOptions::backwards()
        .max_count(1)
        .filter(EventFilter::all().with_types(ACCOUNT_EVENT_TYPES));
    options.from = Some(head);
    Ok(store.read_all(options).await?.first().map(|e| e.position))
}
