//! Black-box reliability scenarios for foldstore.
//!
//! Each scenario drives the real `foldstore serve` binary over HTTP, as a user would,
//! injects one kind of fault (SIGKILL of the server, PostgreSQL terminated or crashed,
//! a full disk, clients that stop reading, tokens that try to see too much, writers
//! racing on shared counters) and checks the outcome with one oracle
//! ([`oracle`]): every acknowledged event present exactly once with its bytes,
//! revision and position; failed appends absent; unknown outcomes whole or absent;
//! revisions contiguous; positions strictly increasing.
//!
//! The `foldstore-reliability` binary runs one scenario per subcommand and prints its
//! checks, one JSON object and a `N passed, N failed` line; `scripts/reliability.sh`
//! runs them all and prints the table of figures in `docs/reliability.md`. The quick
//! tier runs in `cargo test` (`crates/foldstore-cli/tests/reliability.rs`, which
//! calls [`scenarios`] with small counts against the freshly built binary).

pub mod client;
pub mod error;
pub mod load;
pub mod oracle;
pub mod report;
pub mod scenarios;
pub mod server;
pub mod sse;

pub use error::HarnessError;
pub use report::Report;
pub use scenarios::Env;
