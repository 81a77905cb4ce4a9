//! The process's logs: `tracing` events written to standard error as human-readable
//! lines (the default) or one JSON object per line (`--log-format json`), filtered by
//! `RUST_LOG`.
//!
//! Without `RUST_LOG`, foldstore's own crates log at the level the command chooses
//! (`info` for `serve`, `warn` for the others) and every other crate at `warn`.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::error::CliError;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// `2026-01-01T00:00:00.000000Z  INFO target: message key=value`.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the
    /// event's fields at the top level.
    Json,
}

/// The crates whose logs `RUST_LOG`'s absence sets to the command's level.
const OUR_CRATES: [&str; 6] = [
    "foldstore",
    "foldstore_core",
    "foldstore_sqlite",
    "foldstore_postgres",
    "foldstore_server",
    "foldstore_cli",
];

/// The filter used when `RUST_LOG` is unset or empty: `level` for foldstore's crates,
/// `warn` for the rest.
fn default_filter(level: &str) -> String {
    let mut directives = vec!["warn".to_owned()];
    directives.extend(OUR_CRATES.iter().map(|c| format!("{c}={level}")));
    directives.join(",")
}

/// The filter from `RUST_LOG`, or [`default_filter`] when it is unset or empty.
fn filter(level: &str) -> Result<EnvFilter, CliError> {
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).map_err(|e| {
            CliError::Usage(format!(
                "RUST_LOG={v:?} is not a log filter ({e}): give a level such as `debug`, or directives such as `warn,foldstore_server=debug`"
            ))
        }),
        _ => Ok(EnvFilter::new(default_filter(level))),
    }
}

/// Installs the process's log subscriber: `format` lines on standard error, filtered
/// by `RUST_LOG` or else at `level` for foldstore's crates, plus `extra` with its own
/// filter (the trace export, when configured).
pub(crate) fn init(
    format: LogFormat,
    level: &str,
    extra: Option<Box<dyn Layer<Registry> + Send + Sync>>,
) -> Result<(), CliError> {
    let filter = filter(level)?;
    let ansi = std::io::stderr().is_terminal();
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let mut layers = vec![lines.with_filter(filter).boxed()];
    layers.extend(extra);
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| CliError::Usage(format!("could not install the log subscriber: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filter_parses_and_names_every_crate() {
        let f = default_filter("info");
        assert!(EnvFilter::try_new(&f).is_ok(), "{f}");
        assert!(f.starts_with("warn,") && f.contains("foldstore_server=info"));
    }
}
