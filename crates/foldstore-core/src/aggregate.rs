//! Aggregates: the same write model as a [`Decider`], as methods on a struct, for
//! people who prefer them. [`AggregateDecider`] adapts an aggregate to a decider, so
//! the command handler and the test kit work with both.
//!
//! ```
//! use foldstore_core::aggregate::{Aggregate, AggregateDecider};
//! use foldstore_core::decider::Decider;
//!
//! #[derive(Default)]
//! struct Door { open: bool }
//! enum Cmd { Open }
//! #[derive(Debug, PartialEq)]
//! enum Ev { Opened }
//!
//! impl Aggregate for Door {
//!     type Command = Cmd;
//!     type Event = Ev;
//!     type Error = &'static str;
//!     fn apply(&mut self, Ev::Opened: &Ev) { self.open = true; }
//!     fn handle(&self, Cmd::Open: &Cmd) -> Result<Vec<Ev>, Self::Error> {
//!         if self.open { Err("already open") } else { Ok(vec![Ev::Opened]) }
//!     }
//! }
//!
//! let decider = AggregateDecider::<Door>::new();
//! let door = decider.evolve(decider.initial_state(), &Ev::Opened);
//! assert_eq!(decider.decide(&Cmd::Open, &door), Err("already open"));
//! ```

use std::fmt;
use std::marker::PhantomData;

use crate::decider::Decider;

/// A write model as a struct: `apply` mutates it with an event, `handle` decides.
///
/// `handle` takes `&self`: it must not change the aggregate, only return events, so
/// that replaying the events rebuilds exactly the same state.
pub trait Aggregate: Default {
    /// What callers ask for.
    type Command;
    /// What happened.
    type Event;
    /// Why a command is refused.
    type Error;

    /// Changes the aggregate by one event.
    fn apply(&mut self, event: &Self::Event);

    /// The events a command produces, or why it is refused.
    fn handle(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
}

/// The [`Decider`] of an [`Aggregate`]: the state is the aggregate itself.
pub struct AggregateDecider<A>(PhantomData<fn() -> A>);

impl<A> AggregateDecider<A> {
    /// The decider of aggregate `A`.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<A> Default for AggregateDecider<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A> Clone for AggregateDecider<A> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<A> fmt::Debug for AggregateDecider<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AggregateDecider<{}>", std::any::type_name::<A>())
    }
}

impl<A: Aggregate> Decider for AggregateDecider<A> {
    type Command = A::Command;
    type Event = A::Event;
    type State = A;
    type Error = A::Error;

    fn initial_state(&self) -> A {
        A::default()
    }

    fn decide(&self, command: &A::Command, state: &A) -> Result<Vec<A::Event>, A::Error> {
        state.handle(command)
    }

    fn evolve(&self, mut state: A, event: &A::Event) -> A {
        state.apply(event);
        state
    }
}
