//! What the benchmarks write: stream names and events of about 250 bytes of JSON.

use std::sync::Arc;

use foldstore_core::{JSON, NewEvent, StreamName};

/// How many streams the append workloads spread over.
pub(crate) const STREAMS: usize = 10_000;

/// The event type of every benchmark event.
pub(crate) const EVENT_TYPE: &str = "Deposited";

/// The size of every event's data, in bytes.
pub(crate) const DATA_BYTES: usize = 250;

/// `count` stream names `{prefix}-0`, `{prefix}-1`, ...
pub(crate) fn stream_names(prefix: &str, count: usize) -> Arc<[StreamName]> {
    (0..count)
        .map(|i| {
            StreamName::new(format!("{prefix}-{i}")).expect("benchmark stream names are valid")
        })
        .collect()
}

/// JSON data of exactly [`DATA_BYTES`] bytes. `sent_ns` is when the append was
/// issued, in nanoseconds since the benchmark's clock started (0 when unused).
pub(crate) fn event_data(seq: u64, sent_ns: u64) -> Vec<u8> {
    let amount = seq.wrapping_mul(7919) % 100_000;
    let mut s = format!(
        "{{\"account\":\"acc-{:010}\",\"amount_cents\":{amount},\"currency\":\"EUR\",\"seq\":{seq},\"sent_ns\":{sent_ns},\"note\":\"",
        seq % 1_000_000
    );
    let pad = DATA_BYTES.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s.into_bytes()
}

/// A benchmark event (fresh time-ordered id).
pub(crate) fn event(seq: u64, sent_ns: u64) -> NewEvent {
    NewEvent::raw(EVENT_TYPE, event_data(seq, sent_ns), JSON)
}

/// The part of the data the subscribe-latency workload reads back.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Stamp {
    /// When the append was issued, in nanoseconds since the benchmark's clock started.
    pub(crate) sent_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_json_of_the_stated_size() {
        for (seq, sent) in [(0, 0), (123_456_789, 987_654_321_000), (u64::MAX, u64::MAX)] {
            let data = event_data(seq, sent);
            assert!(data.len() >= DATA_BYTES, "{}", data.len());
            assert!(data.len() <= DATA_BYTES + 8, "{}", data.len());
            let stamp: Stamp = serde_json::from_slice(&data).unwrap();
            assert_eq!(stamp.sent_ns, sent);
        }
        assert_eq!(event_data(1, 1).len(), DATA_BYTES);
    }
}
