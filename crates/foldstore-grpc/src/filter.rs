//! Server-side filters of `$all` reads, subscriptions and persistent subscriptions: on
//! stream name or event type, by prefixes or by a regular expression (unanchored, with
//! lookaround, as the clients' defaults such as `^(?!\$).*` need). The matching is the
//! core's [`PatternFilter`], which persistent-subscription groups store.

use foldstore_core::RecordedEvent;
use foldstore_core::persistent::{CompiledPattern, PatternFilter, PatternSubject};
use tonic::Status;

use crate::error::invalid_argument;
use crate::proto::event_store::client::streams::read_req::options::FilterOptions;
use crate::proto::event_store::client::streams::read_req::options::filter_options;

/// The search window KurrentDB uses when a filter asks for `count` rather than `max`.
const DEFAULT_WINDOW: u64 = 32;

/// A compiled filter.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pattern: CompiledPattern,
    /// A subscription sends a checkpoint after this many scanned events.
    pub(crate) checkpoint_interval: u64,
}

/// The request's filter as our pattern: with prefixes, an event passes when its
/// subject starts with one of them; otherwise when the regex matches somewhere in it.
pub(crate) fn pattern(options: &FilterOptions) -> Result<PatternFilter, Status> {
    let (subject, expression) = match &options.filter {
        Some(filter_options::Filter::StreamIdentifier(e)) => (PatternSubject::StreamName, e),
        Some(filter_options::Filter::EventType(e)) => (PatternSubject::EventType, e),
        None => {
            return Err(invalid_argument(
                "a filter names stream_identifier or event_type",
            ));
        }
    };
    let mut pattern = PatternFilter::prefixes(subject, expression.prefix.iter().cloned());
    pattern.regex = expression.regex.clone();
    Ok(pattern)
}

impl Filter {
    /// Compiles the request's filter.
    pub(crate) fn new(options: FilterOptions) -> Result<Self, Status> {
        let pattern = pattern(&options)?
            .compile()
            .map_err(|e| invalid_argument(e.to_string()))?;
        let window = match options.window {
            Some(filter_options::Window::Max(max)) if max > 0 => u64::from(max),
            _ => DEFAULT_WINDOW,
        };
        let multiplier = u64::from(options.checkpoint_interval_multiplier.max(1));
        Ok(Self {
            pattern,
            checkpoint_interval: window.saturating_mul(multiplier),
        })
    }

    /// Whether `event` passes.
    pub(crate) fn matches(&self, event: &RecordedEvent) -> bool {
        self.pattern.matches(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filter_options::{Expression, Filter as Kind, Window};

    fn event(stream: &str, event_type: &str) -> RecordedEvent {
        foldstore_core::saga::recorded_event(stream, event_type, &())
    }

    fn filter(kind: fn(Expression) -> Kind, regex: &str, prefix: &[&str]) -> Filter {
        Filter::new(FilterOptions {
            filter: Some(kind(Expression {
                regex: regex.to_owned(),
                prefix: prefix.iter().map(|p| (*p).to_owned()).collect(),
            })),
            window: Some(Window::Max(10)),
            checkpoint_interval_multiplier: 3,
        })
        .unwrap()
    }

    #[test]
    fn lookahead_regexes_work_as_the_clients_defaults_need() {
        let f = filter(Kind::EventType, r"^(?!\$).*", &[]);
        assert!(f.matches(&event("order-1", "Placed")));
        assert!(!f.matches(&event("order-1", "$metadata")));
        assert_eq!(f.checkpoint_interval, 30);
    }

    #[test]
    fn regexes_are_unanchored_and_prefixes_win() {
        let f = filter(Kind::StreamIdentifier, "der-", &[]);
        assert!(f.matches(&event("order-1", "Placed")));
        let f = filter(Kind::StreamIdentifier, "nothing", &["order-", "cart-"]);
        assert!(f.matches(&event("cart-1", "Placed")));
        assert!(!f.matches(&event("user-1", "Placed")));
    }
}
