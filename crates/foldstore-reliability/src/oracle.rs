//! The shared oracle. Writers give every event a unique id and record each append
//! request as acknowledged, failed or unknown ([`Ledger`]); afterwards [`check`] reads
//! every stream and `$all` and asks: is every acknowledged event present exactly once,
//! with the bytes, revision and position it was acknowledged with; is every failed one
//! absent; is every unknown append wholly present or wholly absent; are revisions
//! contiguous per stream, positions strictly increasing, and `$all` the union of the
//! streams?

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::Value;

use crate::client::{Api, Outcome, Stored};
use crate::error::HarnessError;
use crate::report::Report;

/// One append request: its stream, its events (id, type, data) and what came of it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The stream.
    pub stream: String,
    /// The events as sent: id, type, data.
    pub events: Vec<(String, String, Value)>,
    /// The outcome.
    pub outcome: Outcome,
}

/// Every append request of a run.
#[derive(Debug, Default)]
pub struct Ledger {
    requests: Mutex<Vec<Request>>,
}

impl Ledger {
    /// Records a request.
    pub fn record(&self, request: Request) {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request);
    }

    /// A copy of every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The oracle's counts. Every field but the first six must be zero.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    /// Append requests acknowledged.
    pub acked_requests: u64,
    /// Events acknowledged.
    pub acked_events: u64,
    /// Requests that failed (nothing written).
    pub failed_requests: u64,
    /// Requests whose outcome was unknown.
    pub unknown_requests: u64,
    /// Unknown requests found wholly stored.
    pub unknown_present: u64,
    /// Unknown requests found wholly absent.
    pub unknown_absent: u64,
    /// Acknowledged events missing.
    pub lost: u64,
    /// Events stored more than once.
    pub duplicated: u64,
    /// Appends partly stored, or not adjacent in their stream and in `$all`.
    pub torn: u64,
    /// Stored events whose stream, type or data differ from what was sent, or whose
    /// revision or position differ from the acknowledgement.
    pub corrupt: u64,
    /// Failed appends with any event stored.
    pub failed_present: u64,
    /// Stored events no request sent.
    pub phantom: u64,
    /// Places where `$all` positions do not strictly increase.
    pub order_violations: u64,
    /// Streams whose revisions are not 0, 1, 2, ...
    pub revision_gaps: u64,
    /// Differences between `$all` and the union of the streams.
    pub all_vs_streams: u64,
    /// The first few counter-examples.
    pub examples: Vec<String>,
}

impl Verdict {
    fn bad(&mut self, example: String) {
        if self.examples.len() < 8 {
            self.examples.push(example);
        }
    }

    /// Adds the figures and the zero checks to a report.
    pub fn report(&self, r: &mut Report) {
        r.figure("acked_requests", self.acked_requests);
        r.figure("acked_events", self.acked_events);
        r.figure("failed_requests", self.failed_requests);
        r.figure("unknown_requests", self.unknown_requests);
        r.figure("unknown_present", self.unknown_present);
        r.figure("unknown_absent", self.unknown_absent);
        let ex = &self.examples;
        r.zero("lost", self.lost, ex);
        r.zero("duplicated", self.duplicated, ex);
        r.zero("torn", self.torn, ex);
        r.zero("corrupt", self.corrupt, ex);
        r.zero("failed_present", self.failed_present, ex);
        r.zero("phantom", self.phantom, ex);
        r.zero("order_violations", self.order_violations, ex);
        r.zero("revision_gaps", self.revision_gaps, ex);
        r.zero("all_vs_streams", self.all_vs_streams, ex);
        r.check(
            "some appends acknowledged",
            self.acked_requests > 0,
            self.acked_requests.to_string(),
        );
    }
}

/// Reads `$all` and every stream through `api` at `base` and checks them against the
/// requests.
pub async fn check(api: &Api, base: &str, requests: &[Request]) -> Result<Verdict, HarnessError> {
    let all = api.read_all(base).await?;
    let mut streams: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    for e in &all {
        streams.entry(e.stream.clone()).or_default();
    }
    for r in requests {
        streams.entry(r.stream.clone()).or_default();
    }
    for (name, events) in streams.iter_mut() {
        *events = api.read_stream(base, name).await?;
    }
    Ok(judge(requests, &all, &streams))
}

/// The oracle on events already read.
pub fn judge(
    requests: &[Request],
    all: &[Stored],
    streams: &BTreeMap<String, Vec<Stored>>,
) -> Verdict {
    let mut v = Verdict::default();
    // $all: strictly increasing, each id once.
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, e) in all.iter().enumerate() {
        if i > 0 && all[i - 1].position >= e.position {
            v.order_violations += 1;
            v.bad(format!(
                "$all position {} after {}",
                e.position,
                all[i - 1].position
            ));
        }
        if index.insert(&e.id, i).is_some() {
            v.duplicated += 1;
            v.bad(format!("event {} twice in $all", e.id));
        }
    }
    // Streams: revisions 0.., and the same events as $all has for them.
    let mut in_streams = 0usize;
    for (name, events) in streams {
        in_streams += events.len();
        for (k, e) in events.iter().enumerate() {
            if e.revision != k as u64 {
                v.revision_gaps += 1;
                v.bad(format!("{name}: revision {} at index {k}", e.revision));
                break;
            }
        }
        for e in events {
            match index.get(e.id.as_str()).map(|&i| &all[i]) {
                Some(a)
                    if a.revision == e.revision
                        && a.position == e.position
                        && a.stream == *name => {}
                _ => {
                    v.all_vs_streams += 1;
                    v.bad(format!(
                        "{name}@{} not in $all as read from the stream",
                        e.revision
                    ));
                }
            }
        }
    }
    if in_streams != all.len() {
        v.all_vs_streams += 1;
        v.bad(format!(
            "$all has {} events, the streams {in_streams}",
            all.len()
        ));
    }
    // Requests.
    let mut sent: HashMap<&str, ()> = HashMap::new();
    for r in requests {
        for (id, _, _) in &r.events {
            sent.insert(id, ());
        }
        let found: Vec<Option<usize>> = r
            .events
            .iter()
            .map(|(id, _, _)| index.get(id.as_str()).copied())
            .collect();
        let present = found.iter().filter(|f| f.is_some()).count();
        let whole = present == r.events.len() && adjacent(all, &found);
        // Bytes and stream of what is present.
        for ((id, ty, data), f) in r.events.iter().zip(&found) {
            if let Some(i) = f {
                let e = &all[*i];
                if e.stream != r.stream || &e.event_type != ty || &e.data != data {
                    v.corrupt += 1;
                    v.bad(format!("event {id} stored differently"));
                }
            }
        }
        match &r.outcome {
            Outcome::Ok {
                position,
                next_expected_revision,
            } => {
                v.acked_requests += 1;
                v.acked_events += r.events.len() as u64;
                let missing = (r.events.len() - present) as u64;
                if missing > 0 {
                    v.lost += missing;
                    v.bad(format!(
                        "acknowledged append to {} lost {missing} events",
                        r.stream
                    ));
                } else if !whole {
                    v.torn += 1;
                    v.bad(format!("acknowledged append to {} not adjacent", r.stream));
                } else if let Some(Some(last)) = found.last() {
                    let e = &all[*last];
                    if e.position != *position || e.revision != *next_expected_revision {
                        v.corrupt += 1;
                        v.bad(format!(
                            "append to {} acknowledged at {position}/{next_expected_revision}, stored at {}/{}",
                            r.stream, e.position, e.revision
                        ));
                    }
                }
            }
            Outcome::Failed { status, code } => {
                v.failed_requests += 1;
                if present > 0 {
                    v.failed_present += 1;
                    v.bad(format!(
                        "failed append ({status} {code}) to {} stored",
                        r.stream
                    ));
                }
            }
            Outcome::Unknown { .. } => {
                v.unknown_requests += 1;
                if present == 0 {
                    v.unknown_absent += 1;
                } else if whole {
                    v.unknown_present += 1;
                } else {
                    v.torn += 1;
                    v.bad(format!(
                        "unknown append to {}: {present} of {} events stored",
                        r.stream,
                        r.events.len()
                    ));
                }
            }
        }
    }
    for e in all {
        if !sent.contains_key(e.id.as_str()) {
            v.phantom += 1;
            v.bad(format!("event {} in {} was never sent", e.id, e.stream));
        }
    }
    v
}

/// Whether the found events sit next to each other in `$all` (and so, one stream
/// being theirs, in their stream) with consecutive revisions.
fn adjacent(all: &[Stored], found: &[Option<usize>]) -> bool {
    found.windows(2).all(|w| match (w[0], w[1]) {
        (Some(a), Some(b)) => b == a + 1 && all[b].revision == all[a].revision + 1,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(id: &str, revision: u64, position: u128) -> Stored {
        Stored {
            id: id.into(),
            stream: "s".into(),
            event_type: "T".into(),
            revision,
            position,
            data: json!(id),
        }
    }

    fn request(ids: &[&str], outcome: Outcome) -> Request {
        Request {
            stream: "s".into(),
            events: ids
                .iter()
                .map(|i| (i.to_string(), "T".to_owned(), json!(i)))
                .collect(),
            outcome,
        }
    }

    fn ok(position: u128, next: u64) -> Outcome {
        Outcome::Ok {
            position,
            next_expected_revision: next,
        }
    }

    fn unknown() -> Outcome {
        Outcome::Unknown {
            status: 0,
            code: String::new(),
        }
    }

    fn judged(requests: &[Request], all: Vec<Stored>) -> Verdict {
        let streams = BTreeMap::from([("s".to_owned(), all.clone())]);
        judge(requests, &all, &streams)
    }

    #[test]
    fn a_clean_history_passes_and_each_kind_of_damage_is_counted() {
        let requests = [
            request(&["a", "b"], ok(2, 1)),
            request(&["c"], unknown()),
            request(&["d", "e"], unknown()),
        ];
        let clean = judged(
            &requests,
            vec![stored("a", 0, 1), stored("b", 1, 2), stored("c", 2, 3)],
        );
        assert_eq!(
            (
                clean.lost,
                clean.torn,
                clean.unknown_present,
                clean.unknown_absent
            ),
            (0, 0, 1, 1)
        );
        assert!(clean.examples.is_empty(), "{:?}", clean.examples);

        let lost = judged(&requests, vec![stored("a", 0, 1)]);
        assert_eq!(lost.lost, 1);
        let torn = judged(
            &requests,
            vec![stored("a", 0, 1), stored("b", 1, 2), stored("d", 2, 3)],
        );
        assert_eq!(torn.torn, 1);
        let doubled = judged(
            &requests,
            vec![stored("a", 0, 1), stored("b", 1, 2), stored("a", 2, 3)],
        );
        assert_eq!(doubled.duplicated, 1);
        let reordered = judged(&requests, vec![stored("a", 0, 2), stored("b", 1, 1)]);
        assert!(reordered.order_violations > 0 && reordered.corrupt > 0);
        let phantom = judged(
            &requests,
            vec![stored("a", 0, 1), stored("b", 1, 2), stored("z", 2, 3)],
        );
        assert_eq!(phantom.phantom, 1);
    }
}
