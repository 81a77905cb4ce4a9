//! Live view models: a view folded from events inside the server process, kept
//! current by a subscription, and pushed to browsers over server-sent events.
//!
//! [`LiveView::spawn`] catches the view up from the start of `$all` (or of the events
//! its filter keeps), then follows new events. Each change publishes a new state;
//! [`LiveView::sse`] streams them, one `state` event per change, the first being the
//! state at connection time. A browser that cannot keep up skips intermediate states and
//! always gets the latest (the view keeps one state, never a queue per client), so a
//! slow client costs no memory. Each message is `{"position": "...", "view": ...}`, where
//! `position` is the last event folded in (`null` before the first).
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use foldstore_core::{EventFilter, EventStore, InMemoryStore};
//! use foldstore_server::live_view::LiveView;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
//! // How many events of each type were appended, kept live.
//! let counts = LiveView::spawn(
//!     store,
//!     EventFilter::all(),
//!     std::collections::BTreeMap::<String, u64>::new(),
//!     |view, event| *view.entry(event.event_type.clone()).or_default() += 1,
//! );
//! let app: Router = Router::new().route("/views/counts", get(move || async move { counts.sse() }));
//! # let _ = app;
//! # }
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use foldstore_core::{EventFilter, EventStore, Position, RecordedEvent, SubscribeFrom};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Events folded per published state at most, while catching up.
const FOLD_BATCH: usize = 512;

/// One published state of a view.
#[derive(Debug)]
pub struct Snapshot<V> {
    /// The last event folded in, if any.
    pub position: Option<Position>,
    /// The view.
    pub view: V,
}

/// Why a live view stopped following the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The view is still live.
    Live,
    /// The subscription failed; the view keeps its last state. The message says why.
    Failed(String),
}

/// A view folded from events and kept live; cloning gives another handle to it.
pub struct LiveView<V> {
    states: watch::Receiver<Arc<Snapshot<V>>>,
    stopped: watch::Receiver<Stopped>,
    task: Arc<JoinHandle<()>>,
}

impl<V> Clone for LiveView<V> {
    fn clone(&self) -> Self {
        Self {
            states: self.states.clone(),
            stopped: self.stopped.clone(),
            task: Arc::clone(&self.task),
        }
    }
}

impl<V> std::fmt::Debug for LiveView<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveView")
            .field("position", &self.states.borrow().position)
            .finish_non_exhaustive()
    }
}

impl<V> LiveView<V>
where
    V: Clone + Serialize + Send + Sync + 'static,
{
    /// Starts following `store` (the events `filter` keeps, from the start of `$all`),
    /// folding each event into `initial` with `fold`. Needs a Tokio runtime. The view
    /// follows until every handle is dropped.
    pub fn spawn<F>(
        store: Arc<dyn EventStore>,
        filter: EventFilter,
        initial: V,
        mut fold: F,
    ) -> Self
    where
        F: FnMut(&mut V, &RecordedEvent) + Send + 'static,
    {
        let (publish, states) = watch::channel(Arc::new(Snapshot {
            position: None,
            view: initial.clone(),
        }));
        let (stop_tx, stopped) = watch::channel(Stopped::Live);
        let task = tokio::spawn(async move {
            let mut view = initial;
            let mut position = None;
            let sub = match store.subscribe_to_all(SubscribeFrom::Start, filter).await {
                Ok(sub) => sub,
                Err(e) => {
                    stop_tx.send_replace(Stopped::Failed(e.to_string()));
                    return;
                }
            };
            let mut batches = sub.ready_chunks(FOLD_BATCH);
            while let Some(batch) = batches.next().await {
                for item in batch {
                    match item {
                        Ok(event) => {
                            fold(&mut view, &event);
                            position = Some(event.position);
                        }
                        Err(e) => {
                            stop_tx.send_replace(Stopped::Failed(e.to_string()));
                            return;
                        }
                    }
                }
                let state = Arc::new(Snapshot {
                    position,
                    view: view.clone(),
                });
                if publish.send(state).is_err() {
                    return; // every handle is gone
                }
            }
        });
        Self {
            states,
            stopped,
            task: Arc::new(task),
        }
    }

    /// The current state.
    pub fn current(&self) -> Arc<Snapshot<V>> {
        Arc::clone(&self.states.borrow())
    }

    /// Whether the view still follows the store.
    pub fn stopped(&self) -> Stopped {
        self.stopped.borrow().clone()
    }

    /// Waits until the view has folded in the event at `position` (or a later one).
    /// `position` must be an event the view's filter keeps (such as the position an
    /// append of one returned), not just any position of the store.
    pub async fn wait_for(&self, position: Position) -> Arc<Snapshot<V>> {
        let mut rx = self.states.clone();
        let state = rx
            .wait_for(|s| s.position.is_some_and(|p| p >= position))
            .await;
        match state {
            Ok(s) => Arc::clone(&s),
            // The folding task ended: its last state is all there will be.
            Err(_) => self.current(),
        }
    }

    /// The states as server-sent events: the current state at once, then each change
    /// (intermediate states a slow client missed are skipped), with heartbeats every
    /// 15 s. Return it from an axum handler.
    pub fn sse(&self) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<V>> {
        let mut rx = self.states.clone();
        rx.mark_changed();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let state = Arc::clone(&rx.borrow_and_update());
            Some((Ok(state_event(&state)), rx))
        });
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
    }
}

impl<V> Drop for LiveView<V> {
    fn drop(&mut self) {
        // The last handle stops the folding task.
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

#[derive(Serialize)]
struct Message<'a, V> {
    position: Option<String>,
    view: &'a V,
}

fn state_event<V: Serialize>(state: &Snapshot<V>) -> Event {
    let message = Message {
        position: state.position.map(|p| p.to_string()),
        view: &state.view,
    };
    match Event::default().event("state").json_data(&message) {
        Ok(event) => event,
        Err(e) => Event::default()
            .event("error")
            .data(format!("the view could not be encoded as JSON: {e}")),
    }
}
