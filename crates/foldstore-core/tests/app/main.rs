//! The app toolkit's tests: deciders and the given/when/then kit, domain events and
//! upcasting, the command handler (retries, correlation, deterministic ids,
//! snapshots) and DCB decision models, on the in-memory store.

mod bank;
mod command;
mod decision;
mod events;
mod interleave;
mod snapshots;
mod spec;
