//! The balances read model: every account's balance, folded from the account events
//! in `$all`. [`BalancesProjection`] keeps one current from a subscription;
//! [`Balances::rebuild`] folds `$all` again from zero, independently, to check it.

use std::collections::BTreeMap;
use std::sync::Arc;

use foldstore_core::{
    EventFilter, EventStore, Position, ReadAllOptions, ReadError, RecordedEvent, SubscribeFrom,
    SubscriptionError,
};
use futures::StreamExt;
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

/// A balances read model kept current by a subscription to `$all` (account events
/// only).
pub struct BalancesProjection {
    state: watch::Receiver<Balances>,
    task: JoinHandle<Result<(), SubscriptionError>>,
}

impl BalancesProjection {
    /// Starts following `$all` from its start.
    pub async fn start(store: Arc<dyn EventStore>) -> Result<Self, ReadError> {
        let filter = EventFilter::all().with_types(ACCOUNT_EVENT_TYPES);
        let mut events = store.subscribe_to_all(SubscribeFrom::Start, filter).await?;
        let (tx, state) = watch::channel(Balances::default());
        let task = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let event = event?;
                tx.send_modify(|b| b.apply(&event));
            }
            Ok(())
        });
        Ok(Self { state, task })
    }

    /// Waits until every account event at or below `head` has been applied, and
    /// returns the read model then. `None` when the subscription ended first.
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

    /// Stops the subscription.
    pub fn stop(self) {
        self.task.abort();
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
