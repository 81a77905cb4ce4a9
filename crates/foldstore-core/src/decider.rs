//! Deciders: the pure write model. A decider turns a command and the current state
//! into new events (or a refusal), and folds events into state. No I/O: the command
//! handler ([`crate::command`]) loads, decides and appends.
//!
//! ```
//! use foldstore_core::decider::{Decider, fold};
//!
//! struct Counter;
//! enum Cmd { Add(u32) }
//! #[derive(Debug, PartialEq)]
//! enum Ev { Added(u32) }
//!
//! impl Decider for Counter {
//!     type Command = Cmd;
//!     type Event = Ev;
//!     type State = u32;
//!     type Error = String;
//!     fn initial_state(&self) -> u32 { 0 }
//!     fn decide(&self, Cmd::Add(n): &Cmd, total: &u32) -> Result<Vec<Ev>, String> {
//!         if total + n > 10 { return Err(format!("{total} + {n} is over 10")); }
//!         Ok(vec![Ev::Added(*n)])
//!     }
//!     fn evolve(&self, total: u32, Ev::Added(n): &Ev) -> u32 { total + n }
//! }
//!
//! let state = fold(&Counter, [Ev::Added(4), Ev::Added(5)].iter());
//! assert_eq!(state, 9);
//! assert!(Counter.decide(&Cmd::Add(2), &state).is_err());
//! ```

/// A pure decision model: `decide` and `evolve` must not do I/O or depend on the
/// clock; everything a decision needs is in the command or the state. That is what
/// makes retries after a conflict safe and given/when/then tests exact.
pub trait Decider {
    /// What callers ask for.
    type Command;
    /// What happened; usually a `#[derive(DomainEvent)]` enum.
    type Event;
    /// What decisions need to know, folded from events.
    type State;
    /// Why a command is refused (a domain error, not a technical one).
    type Error;

    /// The state before any event.
    fn initial_state(&self) -> Self::State;

    /// The events a command produces in `state`, or why it is refused. An empty list
    /// means "nothing to do" and appends nothing.
    fn decide(
        &self,
        command: &Self::Command,
        state: &Self::State,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// The state after `event`.
    fn evolve(&self, state: Self::State, event: &Self::Event) -> Self::State;
}

/// Folds `events` into the decider's initial state.
pub fn fold<'a, D>(decider: &D, events: impl IntoIterator<Item = &'a D::Event>) -> D::State
where
    D: Decider + ?Sized,
    D::Event: 'a,
{
    events
        .into_iter()
        .fold(decider.initial_state(), |s, e| decider.evolve(s, e))
}
