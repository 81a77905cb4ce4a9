//! The JSON shapes of the persistent-subscription routes, and their conversion to the
//! core's types.

use axum::http::StatusCode;
use foldstore_core::EventFilter;
use foldstore_core::persistent::{
    EventKey, GroupInfo, NackAction, PersistentEvent, PersistentSettings, StartFrom, Strategy,
    Target,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::wire::{WireEvent, wire_event};

/// 400 `invalid_settings`.
fn invalid_settings(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_settings", detail)
}

/// Where a group starts when it has no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireStart {
    /// The first event.
    Start,
    /// After the last event when the group is created (or updated): stored as
    /// `start_after`.
    End,
}

/// How a group chooses the consumer of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireStrategy {
    /// Each event to the next consumer with room.
    RoundRobin,
    /// Every event to the first consumer with room.
    DispatchToSingle,
    /// A stream's events to the consumer its name hashes to.
    Pinned,
}

impl From<WireStrategy> for Strategy {
    fn from(s: WireStrategy) -> Self {
        match s {
            WireStrategy::RoundRobin => Strategy::RoundRobin,
            WireStrategy::DispatchToSingle => Strategy::DispatchToSingle,
            WireStrategy::Pinned => Strategy::Pinned,
        }
    }
}

impl From<Strategy> for WireStrategy {
    fn from(s: Strategy) -> Self {
        match s {
            Strategy::DispatchToSingle => WireStrategy::DispatchToSingle,
            Strategy::Pinned => WireStrategy::Pinned,
            _ => WireStrategy::RoundRobin,
        }
    }
}

/// Which events of `$all` a group receives: all of them when empty.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireFilter {
    /// Only streams of this category (named `category-...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    category: Option<String>,
    /// Only streams whose name starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    /// Only these event types (any of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    types: Vec<String>,
}

impl WireFilter {
    fn into_filter(self) -> Result<EventFilter, ApiError> {
        let mut filter = match self.category {
            Some(c) => {
                EventFilter::category(c).map_err(|e| invalid_settings(format!("filter: {e}")))?
            }
            None => EventFilter::all(),
        };
        filter.stream_prefix = self.prefix;
        Ok(filter.with_types(self.types))
    }

    fn of(filter: &EventFilter) -> Self {
        Self {
            category: filter.category.clone(),
            prefix: filter.stream_prefix.clone(),
            types: filter.event_types.clone(),
        }
    }

    fn is_empty(&self) -> bool {
        self.category.is_none() && self.prefix.is_none() && self.types.is_empty()
    }
}

/// A group's settings, as `PUT` creates it and `POST` updates it. Every field is
/// optional: a new group takes the default of a field not given, an update keeps its
/// current value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingsBody {
    /// `start` (the default) or `end`; not with `start_after`.
    start_from: Option<WireStart>,
    /// Start after this revision (a stream group) or position (a `$all` group), as a
    /// decimal string; not with `start_from`.
    start_after: Option<String>,
    /// An event leased or delivered longer than this without an ack is delivered
    /// again (default 30000).
    message_timeout_ms: Option<u64>,
    /// An event delivered again more often than this is parked (default 10).
    max_retry_count: Option<u32>,
    /// How many read, unfinished events the group holds at most (default 500).
    live_buffer_size: Option<usize>,
    /// The buffer of a consumer that does not give one (default 10).
    consumer_buffer_size: Option<usize>,
    /// The longest a finished event waits to be checkpointed (default 2000).
    checkpoint_after_ms: Option<u64>,
    /// Fewer finished events are not checkpointed by time alone (default 10).
    min_checkpoint_count: Option<u64>,
    /// A checkpoint is written at the latest after this many (default 1000).
    max_checkpoint_count: Option<u64>,
    /// `round_robin` (the default), `dispatch_to_single` or `pinned`.
    strategy: Option<WireStrategy>,
    /// `$all` groups only: which events the group receives.
    filter: Option<WireFilter>,
}

impl SettingsBody {
    /// `base` with the fields given here, checked for `target`.
    pub(crate) fn apply(
        self,
        target: &Target,
        mut base: PersistentSettings,
    ) -> Result<PersistentSettings, ApiError> {
        match (self.start_from, self.start_after) {
            (Some(_), Some(_)) => {
                return Err(invalid_settings("give start_from or start_after, not both"));
            }
            (Some(WireStart::Start), None) => base.start_from = StartFrom::Start,
            (Some(WireStart::End), None) => base.start_from = StartFrom::End,
            (None, Some(text)) => {
                let after = text.parse::<u128>().map_err(|_| {
                    invalid_settings(format!(
                        "start_after={text:?}: give a revision (stream group) or a position (`$all` group) as a decimal string"
                    ))
                })?;
                if matches!(target, Target::Stream(_)) && after > u128::from(u64::MAX) {
                    return Err(invalid_settings(format!(
                        "start_after={text:?} is larger than any revision"
                    )));
                }
                base.start_from = StartFrom::After(after);
            }
            (None, None) => {}
        }
        if let Some(ms) = self.message_timeout_ms {
            if ms == 0 {
                return Err(invalid_settings(
                    "message_timeout_ms must be at least 1: an event needs time to be acked",
                ));
            }
            base.message_timeout_ms = ms;
        }
        if let Some(n) = self.max_retry_count {
            base.max_retry_count = n;
        }
        if let Some(n) = self.live_buffer_size {
            base.live_buffer_size = positive("live_buffer_size", n)?;
        }
        if let Some(n) = self.consumer_buffer_size {
            base.consumer_buffer_size = positive("consumer_buffer_size", n)?;
        }
        if let Some(ms) = self.checkpoint_after_ms {
            base.checkpoint_after_ms = ms;
        }
        if let Some(n) = self.min_checkpoint_count {
            base.min_checkpoint_count = n;
        }
        if let Some(n) = self.max_checkpoint_count {
            base.max_checkpoint_count = n;
        }
        if base.min_checkpoint_count > base.max_checkpoint_count {
            return Err(invalid_settings(format!(
                "min_checkpoint_count {} is above max_checkpoint_count {}",
                base.min_checkpoint_count, base.max_checkpoint_count
            )));
        }
        if let Some(s) = self.strategy {
            base.strategy = s.into();
        }
        if let Some(filter) = self.filter {
            if matches!(target, Target::Stream(_)) && !filter.is_empty() {
                return Err(invalid_settings(
                    "a filter applies to groups on $all only: a stream group receives every event of its stream",
                ));
            }
            base.filter = filter.into_filter()?;
        }
        Ok(base)
    }
}

fn positive(name: &str, n: usize) -> Result<usize, ApiError> {
    if n == 0 {
        return Err(invalid_settings(format!("{name} must be at least 1")));
    }
    Ok(n)
}

/// A group's settings as stored.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SettingsAnswer {
    /// `start` when the group starts at the first event; absent with `start_after`.
    #[serde(skip_serializing_if = "Option::is_none")]
    start_from: Option<WireStart>,
    /// The revision or position the group starts after (a start at the end is
    /// stored as where the end was).
    #[serde(skip_serializing_if = "Option::is_none")]
    start_after: Option<String>,
    message_timeout_ms: u64,
    max_retry_count: u32,
    live_buffer_size: usize,
    consumer_buffer_size: usize,
    checkpoint_after_ms: u64,
    min_checkpoint_count: u64,
    max_checkpoint_count: u64,
    strategy: WireStrategy,
    /// `$all` groups: the filter; absent when it takes every event.
    #[serde(skip_serializing_if = "Option::is_none")]
    filter: Option<WireFilter>,
}

impl From<&PersistentSettings> for SettingsAnswer {
    fn from(s: &PersistentSettings) -> Self {
        let (start_from, start_after) = match s.start_from {
            StartFrom::After(n) => (None, Some(n.to_string())),
            StartFrom::End => (Some(WireStart::End), None),
            StartFrom::Start => (Some(WireStart::Start), None),
        };
        let filter = WireFilter::of(&s.filter);
        Self {
            start_from,
            start_after,
            message_timeout_ms: s.message_timeout_ms,
            max_retry_count: s.max_retry_count,
            live_buffer_size: s.live_buffer_size,
            consumer_buffer_size: s.consumer_buffer_size,
            checkpoint_after_ms: s.checkpoint_after_ms,
            min_checkpoint_count: s.min_checkpoint_count,
            max_checkpoint_count: s.max_checkpoint_count,
            strategy: s.strategy.into(),
            filter: (!filter.is_empty()).then_some(filter),
        }
    }
}

/// A consumer connected to a group in this server: an HTTP lease, a server-sent
/// event stream, or a library consumer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConsumerAnswer {
    id: u64,
    /// How many events it takes at once; 0 for an HTTP lease, which takes no more.
    buffer_size: usize,
    /// The events it holds and has not acked or nacked.
    in_flight: usize,
}

/// A group and what this server knows of it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GroupAnswer {
    /// The stream, or `$all`.
    stream: String,
    group: String,
    settings: SettingsAnswer,
    /// Whether this server delivers the group's events (it holds the group's lock;
    /// with several servers over one PostgreSQL database, one does).
    serving: bool,
    consumers: Vec<ConsumerAnswer>,
    /// Events handed out and not acked or nacked.
    in_flight: usize,
    /// Events read and waiting for a consumer.
    waiting: usize,
    /// Events parked and not replayed.
    parked: u64,
    /// Every event at or below this revision or position is finished (stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<String>,
    /// The revision or position of the last event read.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_known: Option<String>,
    /// Events acked, skipped or parked since this server started serving the group.
    finished: u64,
    /// HTTP leases open in this server.
    leases: usize,
}

impl GroupAnswer {
    pub(crate) fn new(info: &GroupInfo, leases: usize) -> Self {
        Self {
            stream: info.target.to_string(),
            group: info.group.clone(),
            settings: (&info.settings).into(),
            serving: info.stats.serving,
            consumers: info
                .stats
                .consumers
                .iter()
                .map(|&(id, buffer_size, in_flight)| ConsumerAnswer {
                    id,
                    buffer_size,
                    in_flight,
                })
                .collect(),
            in_flight: info.stats.in_flight,
            waiting: info.stats.waiting,
            parked: info.parked,
            checkpoint: info.stats.checkpoint.map(|c| c.to_string()),
            last_known: info.stats.last_known.map(|c| c.to_string()),
            finished: info.stats.finished,
            leases,
        }
    }
}

/// Groups.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GroupList {
    subscriptions: Vec<GroupAnswer>,
}

impl GroupList {
    pub(crate) fn new(subscriptions: Vec<GroupAnswer>) -> Self {
        Self { subscriptions }
    }
}

/// The key of an event as a client acks it: the revision or position, or
/// `parked:<n>` for a replayed parked event.
pub(crate) fn key_text(key: EventKey) -> String {
    match key {
        EventKey::Source(n) => n.to_string(),
        EventKey::Replay(n) => format!("parked:{n}"),
    }
}

/// Parses a key [`key_text`] wrote.
pub(crate) fn parse_key(text: &str) -> Result<EventKey, ApiError> {
    let parsed = match text.strip_prefix("parked:") {
        Some(n) => n.parse().ok().map(EventKey::Replay),
        None => text.parse().ok().map(EventKey::Source),
    };
    parsed.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_key",
            format!("{text:?} is not an event key: send back the `key` a poll returned"),
        )
    })
}

/// One event handed to a poller.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Message {
    /// What to ack or nack it by (opaque: send it back as it is).
    key: String,
    /// How often it was delivered before without being finished.
    retry_count: u32,
    event: WireEvent,
}

impl Message {
    pub(crate) fn of(e: &PersistentEvent) -> Self {
        Self {
            key: key_text(e.key),
            retry_count: e.retry_count,
            event: wire_event(&e.event),
        }
    }
}

/// The answer to a poll.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Messages {
    /// The lease holding the events (absent when there are none); in the group's
    /// consumers as its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<String>,
    /// Ack or nack within this many milliseconds (the group's message timeout), or the
    /// events may go to another consumer.
    lease_ms: u64,
    messages: Vec<Message>,
}

impl Messages {
    pub(crate) fn new(lease: Option<u64>, lease_ms: u64, messages: Vec<Message>) -> Self {
        Self {
            lease: lease.map(|l| l.to_string()),
            lease_ms,
            messages,
        }
    }
}

/// Events to ack.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckBody {
    /// The keys of the events, as polls returned them (1 to 1000).
    pub(crate) keys: Vec<String>,
}

/// What a consumer asks for events it could not process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireNack {
    /// Park them now (replay them later).
    Park,
    /// Deliver them again (a retry: parked after the group's max retry count).
    Retry,
    /// Treat them as done.
    Skip,
    /// End the leases holding them: their unfinished events go to other consumers
    /// at once, without counting a retry.
    Stop,
}

impl From<WireNack> for NackAction {
    fn from(a: WireNack) -> Self {
        match a {
            WireNack::Park => NackAction::Park,
            WireNack::Retry => NackAction::Retry,
            WireNack::Skip => NackAction::Skip,
            WireNack::Stop => NackAction::Stop,
        }
    }
}

/// Events to nack.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NackBody {
    /// The keys of the events, as polls returned them (1 to 1000).
    pub(crate) keys: Vec<String>,
    pub(crate) action: WireNack,
}

/// The answer to a replay of parked events.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Replayed {
    /// How many parked events were queued for delivery again.
    replayed: u64,
}

impl Replayed {
    pub(crate) fn new(replayed: u64) -> Self {
        Self { replayed }
    }
}

/// The most keys one ack or nack takes.
pub(crate) const MAX_KEYS: usize = 1000;

/// The keys of an ack or nack, parsed.
pub(crate) fn parse_keys(keys: &[String]) -> Result<Vec<EventKey>, ApiError> {
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_key",
            format!(
                "give 1 to {MAX_KEYS} keys, not {}: ack in several requests",
                keys.len()
            ),
        ));
    }
    keys.iter().map(|k| parse_key(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_nonsense_is_refused() {
        for key in [
            EventKey::Source(0),
            EventKey::Source(u128::MAX),
            EventKey::Replay(7),
        ] {
            assert_eq!(parse_key(&key_text(key)).unwrap(), key);
        }
        for bad in ["", "x", "-1", "parked:", "parked:-1", "1.5"] {
            assert_eq!(parse_key(bad).unwrap_err().code(), "invalid_key", "{bad}");
        }
    }

    #[test]
    fn settings_merge_into_the_current_ones_and_are_checked() {
        let stream = Target::parse("acct-1").unwrap();
        let body: SettingsBody =
            serde_json::from_str(r#"{"message_timeout_ms": 5, "strategy": "pinned"}"#).unwrap();
        let s = body.apply(&stream, PersistentSettings::default()).unwrap();
        assert_eq!(s.message_timeout_ms, 5);
        assert_eq!(s.strategy, Strategy::Pinned);
        assert_eq!(
            s.max_retry_count,
            PersistentSettings::default().max_retry_count
        );

        for bad in [
            r#"{"message_timeout_ms": 0}"#,
            r#"{"live_buffer_size": 0}"#,
            r#"{"start_from": "end", "start_after": "3"}"#,
            r#"{"start_after": "x"}"#,
            r#"{"min_checkpoint_count": 5, "max_checkpoint_count": 4}"#,
            r#"{"filter": {"category": "acct"}}"#,
        ] {
            let body: SettingsBody = serde_json::from_str(bad).unwrap();
            let e = body
                .apply(&stream, PersistentSettings::default())
                .unwrap_err();
            assert_eq!(e.code(), "invalid_settings", "{bad}");
        }
        let body: SettingsBody =
            serde_json::from_str(r#"{"filter": {"category": "acct", "types": ["A"]}}"#).unwrap();
        let s = body
            .apply(&Target::All, PersistentSettings::default())
            .unwrap();
        assert_eq!(s.filter.category.as_deref(), Some("acct"));
        let shown = serde_json::to_value(SettingsAnswer::from(&s)).unwrap();
        assert_eq!(shown["filter"]["types"], serde_json::json!(["A"]));
        assert_eq!(shown["start_from"], "start");
    }
}
