//! Given/when/then tests for deciders and aggregates: no store, no async.
//!
//! ```
//! use foldstore_core::decider::Decider;
//! use foldstore_core::testing::DeciderSpec;
//!
//! struct Counter;
//! #[derive(Debug, PartialEq)]
//! enum Ev { Added(u32) }
//! impl Decider for Counter {
//!     type Command = u32;
//!     type Event = Ev;
//!     type State = u32;
//!     type Error = String;
//!     fn initial_state(&self) -> u32 { 0 }
//!     fn decide(&self, n: &u32, total: &u32) -> Result<Vec<Ev>, String> {
//!         if total + n > 10 { Err("over 10".into()) } else { Ok(vec![Ev::Added(*n)]) }
//!     }
//!     fn evolve(&self, total: u32, Ev::Added(n): &Ev) -> u32 { total + n }
//! }
//!
//! DeciderSpec::new(Counter).given([Ev::Added(4)]).when(5).then([Ev::Added(5)]);
//! DeciderSpec::new(Counter).given([Ev::Added(9)]).when(5).then_error("over 10".to_string());
//! ```
//!
//! A failing step panics at the caller's line with both sides of the difference. A
//! spec without `when` panics saying so.

use std::fmt::{Debug, Write};

use crate::aggregate::{Aggregate, AggregateDecider};
use crate::decider::Decider;

/// The command, the state before it and the decision.
type Run<'a, D> = (
    &'a <D as Decider>::Command,
    <D as Decider>::State,
    Result<Vec<<D as Decider>::Event>, <D as Decider>::Error>,
);

/// A given/when/then specification of a [`Decider`].
pub struct DeciderSpec<D: Decider> {
    decider: D,
    given: Vec<D::Event>,
    when: Option<D::Command>,
}

/// A specification of an [`Aggregate`] (through its [`AggregateDecider`]).
pub type AggregateSpec<A> = DeciderSpec<AggregateDecider<A>>;

impl<A> AggregateSpec<A>
where
    A: Aggregate,
    A::Event: Debug + PartialEq,
    A::Command: Debug,
    A::Error: Debug,
{
    /// A specification of aggregate `A`.
    pub fn aggregate() -> Self {
        DeciderSpec::new(AggregateDecider::new())
    }
}

impl<D: Decider> Debug for DeciderSpec<D>
where
    D::Event: Debug,
    D::Command: Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeciderSpec")
            .field("given", &self.given)
            .field("when", &self.when)
            .finish_non_exhaustive()
    }
}

impl<D> DeciderSpec<D>
where
    D: Decider,
    D::Event: Debug + PartialEq,
    D::Command: Debug,
    D::Error: Debug,
{
    /// A specification with no history and no command yet.
    pub fn new(decider: D) -> Self {
        Self {
            decider,
            given: Vec::new(),
            when: None,
        }
    }

    /// The events that already happened (none when not called).
    pub fn given(mut self, events: impl IntoIterator<Item = D::Event>) -> Self {
        self.given.extend(events);
        self
    }

    /// The command under test.
    pub fn when(mut self, command: D::Command) -> Self {
        self.when = Some(command);
        self
    }

    /// The state after the given events (and, after `when`, the new ones).
    #[track_caller]
    fn run(&self, step: &str) -> Run<'_, D> {
        let Some(command) = &self.when else {
            panic!(
                "`{step}` was called without a command: did you forget to call `.when(command)` before `.{step}(...)`?"
            );
        };
        let state = self
            .given
            .iter()
            .fold(self.decider.initial_state(), |s, e| {
                self.decider.evolve(s, e)
            });
        let result = self.decider.decide(command, &state);
        (command, state, result)
    }

    /// Asserts that the command produces exactly `expected`, in order.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = D::Event>) {
        let expected: Vec<D::Event> = expected.into_iter().collect();
        let (command, _, result) = self.run("then");
        match result {
            Ok(actual) if actual == expected => {}
            Ok(actual) => panic!(
                "`then`: the decider produced other events than expected\n  given: {} event(s)\n  when:  {command:?}\n{}",
                self.given.len(),
                diff(&expected, &actual)
            ),
            Err(e) => panic!(
                "`then`: expected {} event(s) but the decider rejected the command\n  when:     {command:?}\n  rejected: {e:?}\n  expected: {expected:?}\nIf the rejection is right, use `.then_error(...)`.",
                expected.len()
            ),
        }
    }

    /// Asserts that the command is refused with `expected`.
    #[track_caller]
    pub fn then_error(self, expected: D::Error)
    where
        D::Error: PartialEq,
    {
        let (command, _, result) = self.run("then_error");
        match result {
            Err(e) if e == expected => {}
            Err(e) => panic!(
                "`then_error`: the command was rejected with another error\n  when:     {command:?}\n  expected: {expected:?}\n  actual:   {e:?}"
            ),
            Ok(events) => panic!(
                "`then_error`: expected the rejection {expected:?} but the decider accepted the command\n  when:     {command:?}\n  produced: {events:?}"
            ),
        }
    }

    /// Asserts the state after the given events and the command's events.
    #[track_caller]
    pub fn then_state(self, expected: D::State)
    where
        D::State: Debug + PartialEq,
    {
        let (command, state, result) = self.run("then_state");
        let events = match result {
            Ok(events) => events,
            Err(e) => panic!(
                "`then_state`: the decider rejected the command, so there is no new state\n  when:     {command:?}\n  rejected: {e:?}"
            ),
        };
        let actual = events.iter().fold(state, |s, e| self.decider.evolve(s, e));
        if actual != expected {
            panic!(
                "`then_state`: the state differs\n  when:     {command:?}\n  events:   {events:?}\n  expected: {expected:?}\n  actual:   {actual:?}"
            );
        }
    }
}

/// A line per event: `  ` equal, `- ` expected only, `+ ` produced only.
fn diff<T: Debug + PartialEq>(expected: &[T], actual: &[T]) -> String {
    let mut out = String::from("  (- expected, + produced)\n");
    for i in 0..expected.len().max(actual.len()) {
        match (expected.get(i), actual.get(i)) {
            (Some(e), Some(a)) if e == a => _ = writeln!(out, "    {i}: {e:?}"),
            (e, a) => {
                if let Some(e) = e {
                    _ = writeln!(out, "  - {i}: {e:?}");
                }
                if let Some(a) = a {
                    _ = writeln!(out, "  + {i}: {a:?}");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Decider for Echo {
        type Command = Vec<u8>;
        type Event = u8;
        type State = ();
        type Error = ();
        fn initial_state(&self) {}
        fn decide(&self, c: &Vec<u8>, _: &()) -> Result<Vec<u8>, ()> {
            Ok(c.clone())
        }
        fn evolve(&self, _: (), _: &u8) {}
    }

    fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let err = std::panic::catch_unwind(f).unwrap_err();
        err.downcast_ref::<String>().cloned().unwrap_or_default()
    }

    #[test]
    fn missing_when_names_the_step() {
        let msg = panic_message(|| DeciderSpec::new(Echo).given([1]).then([1]));
        assert!(
            msg.contains("did you forget to call `.when(command)`"),
            "{msg}"
        );
    }

    #[test]
    fn a_difference_shows_both_sides() {
        let msg = panic_message(|| DeciderSpec::new(Echo).when(vec![1, 2]).then([1, 3, 4]));
        assert!(msg.contains("    0: 1"), "{msg}");
        assert!(msg.contains("  - 1: 3\n  + 1: 2"), "{msg}");
        assert!(msg.contains("  - 2: 4"), "{msg}");
    }

    #[test]
    fn an_accepted_command_fails_then_error() {
        let msg = panic_message(|| DeciderSpec::new(Echo).when(vec![1]).then_error(()));
        assert!(msg.contains("accepted the command"), "{msg}");
    }
}
