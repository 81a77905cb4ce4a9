//! A group's settings between the wire and [`PersistentSettings`], and a group as
//! `GetInfo` and `List` report it.
//!
//! | wire | ours |
//! |---|---|
//! | `stream.revision` / `all.position` (included) | `start_from: After(the one before)`, or `Start` at 0 |
//! | `start` / `end` | `Start` / `End` (resolved to the end when created) |
//! | `settings.revision` (clients naming the stream in `stream_identifier`) | 0 `Start`, the largest uint64 `End`, else that revision |
//! | `all.filter` (stream name or event type, prefixes or regex) | `pattern` |
//! | `message_timeout_ms` / `_ticks` | `message_timeout_ms`; 0 never times out |
//! | `checkpoint_after_ms` / `_ticks` | `checkpoint_after_ms` |
//! | `max_retry_count`, `min_checkpoint_count`, `max_checkpoint_count`, `live_buffer_size`, `max_subscriber_count` (0: no limit) | the same |
//! | `consumer_strategy` (by name) or `named_consumer_strategy` | `strategy`: `RoundRobin`, `DispatchToSingle`, `Pinned` |
//! | `resolve_links`, `extra_statistics`, `read_batch_size`, `history_buffer_size` | kept and reported only |

use foldstore_core::persistent::{
    GroupInfo, PatternFilter, PersistentSettings, StartFrom, Strategy, Target,
};
use foldstore_core::{EventStore, Position};
use tonic::Status;

use crate::error::invalid_argument;
use crate::filter;
use crate::proto::event_store::client::persistent_subscriptions::{
    AllOptions, ConsumerStrategy, GroupOptions, Settings, StreamOptions, SubscriptionInfo,
    all_options, group_options, settings, stream_options, subscription_info,
};
use crate::wire;

/// The message timeout we store for a client's 0: events never time out.
const NEVER_MS: u64 = u64::MAX;

/// 100-nanosecond ticks per millisecond.
const TICKS_PER_MS: i64 = 10_000;

/// The strategies we serve, named in refusals.
const STRATEGIES: &str = "RoundRobin, DispatchToSingle and Pinned";

/// What a Create or Update names: the target, the group, where it starts, and its
/// filter (`$all` only).
pub(crate) struct Named {
    pub(crate) target: Target,
    pub(crate) group: String,
    start: Option<WireStart>,
    pattern: Option<PatternFilter>,
}

/// Where a request says a group starts, before positions are read from the store.
enum WireStart {
    Start,
    End,
    Revision(u64),
    Position(u64, u64),
}

/// The target, group, start and filter of a Create or Update. Clients name the stream
/// in `stream` (with the start), or the older way in `stream_identifier` (with the
/// start in `settings.revision`).
pub(crate) fn named(options: &GroupOptions) -> Result<Named, Status> {
    let group = options.group_name.clone();
    let (target, start, pattern) = match &options.stream_option {
        Some(group_options::StreamOption::Stream(StreamOptions {
            stream_identifier,
            revision_option,
        })) => {
            let stream = wire::stream_name(stream_identifier.as_ref())?;
            let start = revision_option.as_ref().map(|r| match r {
                stream_options::RevisionOption::Revision(r) => WireStart::Revision(*r),
                stream_options::RevisionOption::Start(_) => WireStart::Start,
                stream_options::RevisionOption::End(_) => WireStart::End,
            });
            (Target::Stream(stream), start, None)
        }
        Some(group_options::StreamOption::All(AllOptions {
            all_option,
            filter_option,
        })) => {
            let start = all_option.as_ref().map(|a| match a {
                all_options::AllOption::Position(p) => {
                    WireStart::Position(p.commit_position, p.prepare_position)
                }
                all_options::AllOption::Start(_) => WireStart::Start,
                all_options::AllOption::End(_) => WireStart::End,
            });
            let pattern = match filter_option {
                Some(all_options::FilterOption::Filter(f)) => Some(filter::pattern(f)?),
                _ => None,
            };
            (Target::All, start, pattern)
        }
        None => {
            let stream = wire::stream_name(options.stream_identifier.as_ref()).map_err(|_| {
                invalid_argument(
                    "a persistent subscription names its stream (stream options or stream_identifier) or $all",
                )
            })?;
            let start = options.settings.as_ref().map(|s| match s.revision {
                0 => WireStart::Start,
                u64::MAX => WireStart::End,
                r => WireStart::Revision(r),
            });
            (Target::Stream(stream), start, None)
        }
    };
    Ok(Named {
        target,
        group,
        start,
        pattern,
    })
}

/// The settings a Create or Update asks for, over `base` (the defaults, or the
/// group's current settings): the start, the filter when given, and every setting the
/// request carries.
pub(crate) async fn settings(
    store: &dyn EventStore,
    named: &Named,
    wire: Option<&Settings>,
    mut base: PersistentSettings,
) -> Result<PersistentSettings, Status> {
    if let Some(start) = &named.start {
        base.start_from = start_from(store, &named.target, start).await?;
    }
    if named.pattern.is_some() {
        base.pattern = named.pattern.clone();
    }
    let Some(wire) = wire else {
        return Ok(base);
    };
    let count = |name: &str, value: i32| {
        u32::try_from(value)
            .map_err(|_| invalid_argument(format!("{name} is {value}: give a number of 0 or more")))
    };
    base.resolve_links = wire.resolve_links;
    base.extra_statistics = wire.extra_statistics;
    if let Some(timeout) = &wire.message_timeout {
        let ms = match *timeout {
            settings::MessageTimeout::MessageTimeoutMs(ms) => i64::from(ms),
            settings::MessageTimeout::MessageTimeoutTicks(t) => t / TICKS_PER_MS,
        };
        base.message_timeout_ms = match u64::try_from(ms) {
            Ok(0) => NEVER_MS,
            Ok(ms) => ms,
            Err(_) => {
                return Err(invalid_argument(format!(
                    "message timeout is {ms} ms: give 0 (never) or more"
                )));
            }
        };
    }
    if let Some(after) = &wire.checkpoint_after {
        let ms = match *after {
            settings::CheckpointAfter::CheckpointAfterMs(ms) => i64::from(ms),
            settings::CheckpointAfter::CheckpointAfterTicks(t) => t / TICKS_PER_MS,
        };
        base.checkpoint_after_ms = u64::try_from(ms).map_err(|_| {
            invalid_argument(format!("checkpoint after is {ms} ms: give 0 or more"))
        })?;
    }
    base.max_retry_count = count("max retry count", wire.max_retry_count)?;
    base.min_checkpoint_count =
        u64::from(count("min checkpoint count", wire.min_checkpoint_count)?);
    base.max_checkpoint_count =
        u64::from(count("max checkpoint count", wire.max_checkpoint_count)?);
    if base.min_checkpoint_count > base.max_checkpoint_count {
        return Err(invalid_argument(format!(
            "min checkpoint count {} is above max checkpoint count {}: give min ≤ max",
            base.min_checkpoint_count, base.max_checkpoint_count
        )));
    }
    base.max_subscriber_count = count("max subscriber count", wire.max_subscriber_count)? as usize;
    base.live_buffer_size = count("live buffer size", wire.live_buffer_size)? as usize;
    base.read_batch_size = count("read batch size", wire.read_batch_size)? as usize;
    base.history_buffer_size = count("history buffer size", wire.history_buffer_size)? as usize;
    base.strategy = strategy(wire)?;
    Ok(base)
}

/// The strategy by name when the request gives one, else by the enum.
fn strategy(wire: &Settings) -> Result<Strategy, Status> {
    let name = if wire.consumer_strategy.is_empty() {
        match ConsumerStrategy::try_from(wire.named_consumer_strategy) {
            Ok(named) => named.as_str_name(),
            Err(_) => {
                return Err(invalid_argument(format!(
                    "consumer strategy {} is unknown: foldstore serves {STRATEGIES}",
                    wire.named_consumer_strategy
                )));
            }
        }
    } else {
        wire.consumer_strategy.as_str()
    };
    match name {
        "RoundRobin" => Ok(Strategy::RoundRobin),
        "DispatchToSingle" => Ok(Strategy::DispatchToSingle),
        "Pinned" => Ok(Strategy::Pinned),
        other => Err(invalid_argument(format!(
            "consumer strategy {other:?} is not served: foldstore serves {STRATEGIES}"
        ))),
    }
}

/// The name of a strategy, as clients read it.
fn strategy_name(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::RoundRobin => "RoundRobin",
        Strategy::DispatchToSingle => "DispatchToSingle",
        Strategy::Pinned => "Pinned",
    }
}

/// Our start for a request's. KurrentDB starts at the revision or position given,
/// including it; ours starts after one.
async fn start_from(
    store: &dyn EventStore,
    target: &Target,
    start: &WireStart,
) -> Result<StartFrom, Status> {
    Ok(match (start, target) {
        (WireStart::Start, _) => StartFrom::Start,
        (WireStart::End, _) => StartFrom::End,
        (WireStart::Revision(0), Target::Stream(_)) => StartFrom::Start,
        (WireStart::Revision(r), Target::Stream(_)) => StartFrom::After(u128::from(r - 1)),
        (WireStart::Position(commit, prepare), Target::All) => {
            let position = wire::store_position(store, *commit, *prepare).await?;
            if position == Position::ZERO {
                StartFrom::Start
            } else {
                StartFrom::After(position.prev().as_u128())
            }
        }
        (WireStart::Revision(_), Target::All) | (WireStart::Position(..), Target::Stream(_)) => {
            return Err(invalid_argument(
                "a stream group starts at a revision, a $all group at a position",
            ));
        }
    })
}

/// A revision (stream group) or `C:<commit>/P:<prepare>` (`$all` group).
fn point(target: &Target, value: u128) -> String {
    match target {
        Target::Stream(_) => value.to_string(),
        Target::All => {
            let (commit, prepare) = wire::wire_position(Position::new(value));
            format!("C:{commit}/P:{prepare}")
        }
    }
}

/// Where the group starts, as clients read it: `0` / `C:0/P:0` the start, `-1` /
/// `C:-1/P:-1` the end, else the first revision or position it delivers.
fn start_name(target: &Target, start: StartFrom) -> String {
    match (start, target) {
        (StartFrom::Start, Target::Stream(_)) => "0".to_owned(),
        (StartFrom::Start, Target::All) => "C:0/P:0".to_owned(),
        (StartFrom::End, Target::Stream(_)) => "-1".to_owned(),
        (StartFrom::End, Target::All) => "C:-1/P:-1".to_owned(),
        (StartFrom::After(p), target) => point(target, p.saturating_add(1)),
    }
}

/// A count for a 32-bit field, saturating.
fn int32(n: impl TryInto<i32>) -> i32 {
    n.try_into().unwrap_or(i32::MAX)
}

/// A count for a 64-bit field, saturating.
fn int64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// A group as `GetInfo` and `List` report it; `names` gives each consumer's
/// connection name.
pub(crate) fn info(group: &GroupInfo, names: &dyn Fn(u64) -> String) -> SubscriptionInfo {
    let s = &group.settings;
    let stats = &group.stats;
    let connections = stats
        .consumers
        .iter()
        .map(
            |&(id, capacity, in_flight)| subscription_info::ConnectionInfo {
                from: format!("consumer {id}"),
                username: String::new(),
                average_items_per_second: 0,
                total_items: 0,
                count_since_last_measurement: 0,
                observed_measurements: Vec::new(),
                available_slots: int32(capacity.saturating_sub(in_flight)),
                in_flight_messages: int32(in_flight),
                connection_name: names(id),
            },
        )
        .collect();
    let message_timeout = match s.message_timeout_ms {
        NEVER_MS => 0,
        ms => int32(ms),
    };
    SubscriptionInfo {
        event_source: group.target.to_string(),
        group_name: group.group.clone(),
        status: if stats.serving { "Live" } else { "NotReady" }.to_owned(),
        connections,
        average_per_second: 0,
        total_items: int64(stats.finished),
        count_since_last_measurement: 0,
        last_checkpointed_event_position: stats
            .checkpoint
            .map_or_else(String::new, |c| point(&group.target, c)),
        last_known_event_position: stats
            .last_known
            .map_or_else(String::new, |c| point(&group.target, c)),
        resolve_link_tos: s.resolve_links,
        start_from: start_name(&group.target, s.start_from),
        message_timeout_milliseconds: message_timeout,
        extra_statistics: s.extra_statistics,
        max_retry_count: int32(s.max_retry_count),
        live_buffer_size: int32(s.live_buffer_size),
        buffer_size: int32(s.history_buffer_size),
        read_batch_size: int32(s.read_batch_size),
        check_point_after_milliseconds: int32(s.checkpoint_after_ms),
        min_check_point_count: int32(s.min_checkpoint_count),
        max_check_point_count: int32(s.max_checkpoint_count),
        read_buffer_count: int32(stats.waiting),
        live_buffer_count: int64(stats.waiting),
        retry_buffer_count: 0,
        total_in_flight_messages: int32(stats.in_flight),
        outstanding_messages_count: int32(stats.in_flight),
        named_consumer_strategy: strategy_name(s.strategy).to_owned(),
        max_subscriber_count: int32(s.max_subscriber_count),
        parked_message_count: int64(group.parked),
    }
}

#[cfg(test)]
mod tests {
    use foldstore_core::persistent::GroupStats;
    use foldstore_core::{InMemoryStore, StreamName};

    use super::*;
    use crate::proto::event_store::client::{Empty, StreamIdentifier};

    fn stream_options(revision: stream_options::RevisionOption) -> GroupOptions {
        GroupOptions {
            stream_identifier: None,
            group_name: "g".to_owned(),
            settings: None,
            stream_option: Some(group_options::StreamOption::Stream(StreamOptions {
                stream_identifier: Some(wire::stream_identifier(
                    &StreamName::new("orders-1").unwrap(),
                )),
                revision_option: Some(revision),
            })),
        }
    }

    async fn resolve(options: &GroupOptions) -> PersistentSettings {
        let store = InMemoryStore::new();
        let named = named(options).unwrap();
        settings(
            &store,
            &named,
            options.settings.as_ref(),
            PersistentSettings::default(),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_revision_is_included_and_reported_back_as_given() {
        let s = resolve(&stream_options(stream_options::RevisionOption::Revision(5))).await;
        assert_eq!(s.start_from, StartFrom::After(4));
        let target = Target::Stream(StreamName::new("orders-1").unwrap());
        assert_eq!(start_name(&target, s.start_from), "5");
        let s = resolve(&stream_options(stream_options::RevisionOption::Revision(0))).await;
        assert_eq!(start_name(&target, s.start_from), "0");
    }

    #[tokio::test]
    async fn the_older_way_names_the_stream_and_the_start_in_settings() {
        let options = GroupOptions {
            stream_identifier: Some(StreamIdentifier {
                stream_name: "orders-1".into(),
            }),
            group_name: "g".to_owned(),
            settings: Some(Settings {
                revision: u64::MAX,
                named_consumer_strategy: ConsumerStrategy::Pinned as i32,
                max_checkpoint_count: 10,
                ..Settings::default()
            }),
            stream_option: None,
        };
        let named = named(&options).unwrap();
        assert_eq!(
            named.target,
            Target::Stream(StreamName::new("orders-1").unwrap())
        );
        let s = resolve(&options).await;
        assert_eq!(s.start_from, StartFrom::End);
        assert_eq!(s.strategy, Strategy::Pinned);
    }

    #[test]
    fn a_strategy_by_name_wins_and_unknown_ones_are_refused_naming_ours() {
        let by_name = Settings {
            consumer_strategy: "RoundRobin".to_owned(),
            ..Settings::default()
        };
        assert_eq!(strategy(&by_name).unwrap(), Strategy::RoundRobin);
        assert_eq!(
            strategy(&Settings::default()).unwrap(),
            Strategy::DispatchToSingle,
            "the enum's 0"
        );
        let correlation = Settings {
            consumer_strategy: "PinnedByCorrelation".to_owned(),
            ..Settings::default()
        };
        let refused = strategy(&correlation).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains(STRATEGIES), "{refused:?}");
    }

    #[tokio::test]
    async fn a_zero_message_timeout_never_times_out_and_reads_back_as_zero() {
        let mut options = stream_options(stream_options::RevisionOption::Start(Empty {}));
        options.settings = Some(Settings {
            message_timeout: Some(settings::MessageTimeout::MessageTimeoutMs(0)),
            checkpoint_after: Some(settings::CheckpointAfter::CheckpointAfterTicks(20_000_000)),
            max_checkpoint_count: 10,
            ..Settings::default()
        });
        let s = resolve(&options).await;
        assert_eq!(s.message_timeout_ms, NEVER_MS);
        assert_eq!(s.checkpoint_after_ms, 2_000);
        let group = GroupInfo {
            target: Target::All,
            group: "g".to_owned(),
            settings: s,
            parked: 0,
            stats: GroupStats::default(),
        };
        let reported = info(&group, &|_| String::new());
        assert_eq!(reported.message_timeout_milliseconds, 0);
        assert_eq!(reported.start_from, "C:0/P:0");
        assert_eq!(reported.last_checkpointed_event_position, "");
    }

    #[tokio::test]
    async fn negative_counts_are_refused() {
        let mut options = stream_options(stream_options::RevisionOption::Start(Empty {}));
        options.settings = Some(Settings {
            max_retry_count: -1,
            ..Settings::default()
        });
        let store = InMemoryStore::new();
        let named = named(&options).unwrap();
        let refused = settings(
            &store,
            &named,
            options.settings.as_ref(),
            PersistentSettings::default(),
        )
        .await
        .unwrap_err();
        assert!(refused.message().contains("max retry count"), "{refused:?}");
    }
}
