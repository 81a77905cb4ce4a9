//! KurrentDB's filters of `$all`: on the stream name or the event type, by prefixes or
//! by a regular expression. A group on `$all` applies its [`PatternFilter`] to each
//! event it reads, after the store's [`crate::EventFilter`].
//!
//! The regular expressions are unanchored and support lookaround, as KurrentDB's
//! clients' defaults need (the Python client excludes system events with
//! `^(?!(\$.+$))`), which is why they run on `fancy-regex` rather than `regex`.

use serde::{Deserialize, Serialize};

use crate::RecordedEvent;
use crate::persistent::PersistentError;

/// What a [`PatternFilter`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PatternSubject {
    /// The event's stream name.
    StreamName,
    /// The event's type.
    EventType,
}

/// Events whose subject starts with one of `prefixes`; without prefixes, events in
/// whose subject `regex` matches somewhere (an empty regex matches everything).
///
/// ```
/// use foldstore_core::persistent::{PatternFilter, PatternSubject};
///
/// let filter = PatternFilter::regex(PatternSubject::EventType, r"^(?!\$).*");
/// let compiled = filter.compile().unwrap();
/// assert!(compiled.matches_subject("OrderPlaced"));
/// assert!(!compiled.matches_subject("$metadata"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PatternFilter {
    /// What is matched.
    pub subject: PatternSubject,
    /// Prefixes; when any is given, the regex is not used.
    pub prefixes: Vec<String>,
    /// A regular expression, matched anywhere in the subject.
    pub regex: String,
}

impl PatternFilter {
    /// Events whose subject starts with one of `prefixes`.
    pub fn prefixes<I, S>(subject: PatternSubject, prefixes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            subject,
            prefixes: prefixes.into_iter().map(Into::into).collect(),
            regex: String::new(),
        }
    }

    /// Events in whose subject `regex` matches.
    pub fn regex(subject: PatternSubject, regex: impl Into<String>) -> Self {
        Self {
            subject,
            prefixes: Vec::new(),
            regex: regex.into(),
        }
    }

    /// Compiles the regular expression, refusing one that does not compile.
    pub fn compile(&self) -> Result<CompiledPattern, PersistentError> {
        let regex = if self.prefixes.is_empty() && !self.regex.is_empty() {
            let regex = fancy_regex::Regex::new(&self.regex).map_err(|e| {
                PersistentError::InvalidSettings(format!(
                    "filter regex {:?} does not compile: {e}",
                    self.regex
                ))
            })?;
            Some(regex)
        } else {
            None
        };
        Ok(CompiledPattern {
            subject: self.subject,
            prefixes: self.prefixes.clone(),
            regex,
        })
    }
}

/// A [`PatternFilter`] ready to match events.
#[derive(Debug, Clone)]
pub struct CompiledPattern {
    subject: PatternSubject,
    prefixes: Vec<String>,
    regex: Option<fancy_regex::Regex>,
}

impl CompiledPattern {
    /// Whether `event` passes.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.matches_subject(match self.subject {
            PatternSubject::StreamName => event.stream.as_str(),
            PatternSubject::EventType => event.event_type.as_str(),
        })
    }

    /// Whether an event with this subject (stream name or event type) passes.
    pub fn matches_subject(&self, subject: &str) -> bool {
        if !self.prefixes.is_empty() {
            return self
                .prefixes
                .iter()
                .any(|p| subject.starts_with(p.as_str()));
        }
        // A regex that cannot finish (its backtracking limit) lets nothing through.
        self.regex
            .as_ref()
            .is_none_or(|r| r.is_match(subject).unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_win_over_the_regex_and_regexes_are_unanchored() {
        let mut f = PatternFilter::prefixes(PatternSubject::StreamName, ["order-", "cart-"]);
        f.regex = "nothing".to_owned();
        let c = f.compile().unwrap();
        assert!(c.matches_subject("cart-1"));
        assert!(!c.matches_subject("user-1"));
        let c = PatternFilter::regex(PatternSubject::StreamName, "der-")
            .compile()
            .unwrap();
        assert!(c.matches_subject("order-1"));
    }

    #[test]
    fn a_regex_that_does_not_compile_is_refused_with_its_text() {
        let e = PatternFilter::regex(PatternSubject::EventType, "(")
            .compile()
            .unwrap_err();
        assert!(e.to_string().contains("\"(\""), "{e}");
    }

    #[test]
    fn an_empty_filter_lets_everything_through() {
        let c = PatternFilter::regex(PatternSubject::EventType, "")
            .compile()
            .unwrap();
        assert!(c.matches_subject("anything"));
    }
}
