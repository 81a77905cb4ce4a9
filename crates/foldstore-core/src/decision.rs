//! Decision models (Dynamic Consistency Boundary): a decider whose state is folded
//! from the events matching a [`Query`], across streams, instead of from one stream.
//!
//! [`DecisionHandler::handle`] reads the query's events with
//! [`EventStore::read_query`], folds them, decides, and appends with
//! [`EventStore::append_if`] under the condition "fail if an event matching the query
//! was stored after the last one I read" (the store's head when it read none). When
//! the condition fails, someone changed the facts the decision rested on: it reads,
//! decides and appends again, as [`RetryPolicy`] allows. New events carry their
//! [`DomainEvent::tags`], so later queries find them.
//!
//! ```
//! use std::sync::Arc;
//! use foldstore_core::{CommandContext, DecisionHandler, DomainEvent, InMemoryStore, StreamName};
//! use foldstore_core::dcb::{Query, QueryItem};
//! use foldstore_core::decider::Decider;
//! use serde::{Deserialize, Serialize};
//!
//! // A username may be claimed once, whichever stream the claim lands in.
//! #[derive(Debug, PartialEq, Serialize, Deserialize, DomainEvent)]
//! enum Ev { Claimed { #[event(tag)] username: String, user: u32 } }
//! struct Claim;
//! impl Decider for Claim {
//!     type Command = (String, u32);
//!     type Event = Ev;
//!     type State = bool; // taken?
//!     type Error = String;
//!     fn initial_state(&self) -> bool { false }
//!     fn decide(&self, (name, user): &(String, u32), taken: &bool) -> Result<Vec<Ev>, String> {
//!         if *taken { return Err(format!("{name} is taken")); }
//!         Ok(vec![Ev::Claimed { username: name.clone(), user: *user }])
//!     }
//!     fn evolve(&self, _: bool, _: &Ev) -> bool { true }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let handler = DecisionHandler::new(Arc::new(InMemoryStore::new()), Claim);
//! let query = Query::from_items([QueryItem::new().types(["Claimed"]).tags(["username:ada"])]);
//! let ctx = CommandContext::new();
//! handler.handle(&query, &StreamName::new("user-1")?, &("ada".into(), 1), &ctx).await?;
//! let again = handler.handle(&query, &StreamName::new("user-2")?, &("ada".into(), 2), &ctx).await;
//! assert!(again.unwrap_err().is_rejected());
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use crate::dcb::{AppendCondition, Query, ReadQueryOptions};
use crate::decider::Decider;
use crate::upcast::Upcasters;
use crate::{
    AppendError, CommandContext, CommandError, CommandOutcome, DecodeError, DomainEvent,
    EventStore, ExpectedRevision, Position, RecordedEvent, RetryPolicy, StreamName,
};

/// A decision model's folded state and the position its append condition starts at.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionState<S> {
    /// The state folded from the query's events.
    pub state: S,
    /// The position of the last event read, or the store's head when none matched
    /// (`None`: the store was empty).
    pub after: Option<Position>,
    /// Events read and folded.
    pub events_folded: u64,
}

/// Runs a [`Decider`] on the events matching a query. See the [module](self).
pub struct DecisionHandler<D> {
    store: Arc<dyn EventStore>,
    decider: D,
    upcasters: Upcasters,
    retry: RetryPolicy,
    skip_unknown: bool,
}

impl<D> std::fmt::Debug for DecisionHandler<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionHandler")
            .field("retry", &self.retry)
            .field("upcasters", &self.upcasters)
            .finish_non_exhaustive()
    }
}

impl<D> DecisionHandler<D>
where
    D: Decider + Send + Sync,
    D::Event: DomainEvent + Send + Sync,
    D::State: Send,
    D::Command: Sync,
    D::Error: Send,
{
    /// A handler over `store` with the default [`RetryPolicy`].
    pub fn new(store: Arc<dyn EventStore>, decider: D) -> Self {
        Self {
            store,
            decider,
            upcasters: Upcasters::new(),
            retry: RetryPolicy::default(),
            skip_unknown: false,
        }
    }

    /// Sets the upcasters applied before decoding.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Skips matching events whose type the event enum does not know.
    pub fn skip_unknown_types(mut self, skip: bool) -> Self {
        self.skip_unknown = skip;
        self
    }

    /// Reads and folds the events matching `query`.
    pub async fn load(
        &self,
        query: &Query,
    ) -> Result<DecisionState<D::State>, CommandError<D::Error>> {
        Ok(self.load_inner(query).await?.0)
    }

    async fn load_inner(
        &self,
        query: &Query,
    ) -> Result<(DecisionState<D::State>, Vec<RecordedEvent>), CommandError<D::Error>> {
        // The head first: an event committed after it and matching the query is in
        // the read below, so `after` never hides one.
        let head = self.store.head_position().await?;
        let events = self
            .store
            .read_query(query, ReadQueryOptions::new())
            .await?;
        let mut state = self.decider.initial_state();
        for e in &events {
            if let Some(ev) = self.decode(e)? {
                state = self.decider.evolve(state, &ev);
            }
        }
        let after = events.last().map(|e| e.position).or(head);
        let loaded = DecisionState {
            state,
            after,
            events_folded: events.len() as u64,
        };
        Ok((loaded, events))
    }

    fn decode(&self, event: &RecordedEvent) -> Result<Option<D::Event>, DecodeError> {
        match self.upcasters.decode::<D::Event>(event) {
            Ok(e) => Ok(Some(e)),
            Err(e) if self.skip_unknown && e.is_unknown_type() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Decides `command` on the events matching `query` and appends the new events to
    /// `stream` if no matching event was stored meanwhile.
    pub async fn handle(
        &self,
        query: &Query,
        stream: &StreamName,
        command: &D::Command,
        ctx: &CommandContext,
    ) -> Result<CommandOutcome<D::Event>, CommandError<D::Error>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (loaded, read) = self.load_inner(query).await?;
            // A replay with a seed whose first event the query read: already applied.
            if ctx.id_seed.is_some()
                && let Some(start) = read.iter().position(|e| e.id == ctx.event_id(0))
            {
                return self.stored_outcome(&read[start..], ctx, attempt);
            }
            let events = self
                .decider
                .decide(command, &loaded.state)
                .map_err(CommandError::Rejected)?;
            if events.is_empty() {
                return Ok(CommandOutcome {
                    events,
                    next_expected_revision: None,
                    position: None,
                    already_applied: false,
                    attempts: attempt,
                });
            }
            let new_events = ctx.encode(&events)?;
            let condition = AppendCondition::new(query.clone(), loaded.after);
            match self
                .store
                .append_if(stream, ExpectedRevision::Any, new_events, condition)
                .await
            {
                Ok(result) => {
                    return Ok(CommandOutcome {
                        events,
                        next_expected_revision: Some(result.next_expected_revision),
                        position: Some(result.position),
                        already_applied: false,
                        attempts: attempt,
                    });
                }
                Err(AppendError::ConditionFailed { .. }) => {
                    if attempt >= self.retry.max_attempts {
                        return Err(CommandError::Conflict {
                            stream: stream.clone(),
                            attempts: attempt,
                        });
                    }
                    self.retry.wait(attempt).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn stored_outcome(
        &self,
        read: &[RecordedEvent],
        ctx: &CommandContext,
        attempts: u32,
    ) -> Result<CommandOutcome<D::Event>, CommandError<D::Error>> {
        let mut events = Vec::new();
        let mut last = None;
        // The command's events are consecutive in their stream, and each matches the
        // query only if its type and tags do: follow the ids, not the positions.
        for (i, e) in read
            .iter()
            .filter(|e| e.stream == read[0].stream)
            .enumerate()
        {
            if e.id != ctx.event_id(i as u64) {
                break;
            }
            if let Some(ev) = self.decode(e)? {
                events.push(ev);
            }
            last = Some(e);
        }
        Ok(CommandOutcome {
            events,
            next_expected_revision: last.map(|e| e.revision),
            position: last.map(|e| e.position),
            already_applied: true,
            attempts,
        })
    }
}
