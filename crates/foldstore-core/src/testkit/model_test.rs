//! The reference-model test: random sequences of operations run against the store under
//! test and against [`Model`], comparing every answer.
//!
//! Operations are appends (valid and invalid: random expected revisions, retries that
//! reuse earlier ids whole, in part, reversed or in another stream, empty appends, bad
//! types and data), stream reads (both directions, `from`, `max_count`), `$all` and
//! category reads with filters and consumer groups, soft deletes, tombstones, metadata
//! (`max_count`, `truncate_before`) and the head position, over four streams in two
//! categories so that they collide; and the Dynamic Consistency Boundary: events carry
//! random tags, conditional appends (`append_if`, also retried) and query reads use
//! random queries (types OR, tags AND, items OR, `Query::all`, now and then an invalid
//! tag) with random `after` positions, and a `ConditionFailed` must name the model's
//! first match; and transactions (§13): one to three parts over the same streams and
//! stream-less ones, with random expectations, conditions and tracking of two sources
//! (now and then an invalid one), retried whole, in part, with a part added or in
//! another order, and tracking reads. After every operation the store's whole `$all` is
//! compared with the model's log, and subscriptions opened before the first operation
//! (to `$all`, to a category, to each stream) are pulled up to the new end: they must
//! deliver the log live, in order, once, and a stream's must end with
//! `StreamTombstoned` when the model tombstones it. At the end, fresh subscriptions to
//! `$all` and to each stream must deliver what reads return.
//!
//! Positions are opaque, so the test learns the store's position of each event from its
//! `$all` (checking they strictly increase) and compares positions through that map.
//!
//! Each sequence runs on a fresh store from the factory. The number of sequences is
//! `FOLDSTORE_PROPTEST_CASES` (default 64, up to 30 operations each); a failure prints
//! the seed (`FOLDSTORE_PROPTEST_SEED` replays the run) and the shrunk sequence.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use uuid::Uuid;

use super::TestStore;
use super::model::{Model, ModelPart, Refusal};
use crate::dcb::{AppendCondition, Query, QueryItem, ReadQueryOptions};
use crate::transaction::{AppendTransaction, StreamAppend, Tracking};
use crate::{
    AppendError, ConsumerGroup, CurrentRevision, Direction, EventFilter, EventSubscription,
    ExpectedRevision, JSON, Metadata, NewEvent, Position, ReadAllOptions, ReadStreamOptions,
    RecordedEvent, StreamMetadata, StreamName, SubscribeFrom, SubscribeStreamFrom,
    SubscriptionError,
};

const STREAMS: [&str; 4] = ["account-1", "account-2", "order-1", "order-1-b"];
const TYPES: [&str; 3] = ["Opened", "Deposited", "Closed"];
const PREFIXES: [&str; 5] = ["account-", "account-1", "order", "", "zzz"];
const CATEGORIES: [&str; 3] = ["account", "order", "orders"];
const TAGS: [&str; 3] = ["acct:1", "acct:2", "vip"];
/// Tracking sources; the last one is invalid.
const SOURCES: [&str; 3] = ["inbox", "outbox", ""];
const MAX_OPS: usize = 30;
const DEFAULT_CASES: u32 = 64;
const SEQUENCE_TIMEOUT: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(10);

/// An expected revision to generate; `Current` becomes whatever the stream is at.
#[derive(Debug, Clone, Copy)]
enum Exp {
    Any,
    NoStream,
    StreamExists,
    Exact(u64),
    Current,
}

/// An event to generate.
#[derive(Debug, Clone, Copy)]
struct Ev {
    ty: usize,
    n: u8,
    binary: bool,
    meta: bool,
    /// Which of [`TAGS`] it carries (bit `i` for tag `i`).
    tags: u8,
}

/// A DCB query to generate: items of (types, tags) indexes; `bad_tag` adds an empty tag.
#[derive(Debug, Clone)]
struct Q {
    items: Vec<(Vec<usize>, Vec<usize>)>,
    bad_tag: bool,
}

/// A condition's or a query read's `after`.
#[derive(Debug, Clone, Copy)]
enum After {
    Nothing,
    Event(usize),
    Head,
}

/// One thing wrong with an append.
#[derive(Debug, Clone, Copy)]
enum Defect {
    NoEvents,
    EmptyType,
    LongType,
    ControlType,
    BadJson,
    EmptyContentType,
    DuplicateId,
    BadTag,
}

/// How a retry reuses the events of an earlier append attempt.
#[derive(Debug, Clone, Copy)]
enum RetryHow {
    Same,
    Expected(Exp),
    Stream(usize),
    Overlap,
    Reversed,
    Prefix,
}

/// A `$all` position to read from.
#[derive(Debug, Clone, Copy)]
enum Pos {
    Start,
    Event(usize),
    End,
}

#[derive(Debug, Clone)]
struct Filter {
    prefix: Option<usize>,
    category: Option<usize>,
    types: Vec<usize>,
    group: Option<(u32, u32)>,
    invalid_category: bool,
}

/// One part of a generated transaction: a stream of [`STREAMS`], or none (the events
/// go to a stream of their own).
#[derive(Debug, Clone)]
struct TxPart {
    stream: Option<usize>,
    expected: Exp,
    events: Vec<Ev>,
}

/// How a transaction retry reuses an earlier transaction attempt.
#[derive(Debug, Clone, Copy)]
enum TxRetry {
    Same,
    /// Without its first part (the rest stored: a retry of part of it).
    DropFirst,
    /// With a new part added (stored and new mixed).
    AddPart,
    /// Its parts in the reverse order.
    Reversed,
    /// With another tracking position.
    Tracking(u8),
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: usize,
        expected: Exp,
        events: Vec<Ev>,
        defect: Option<(Defect, usize)>,
    },
    Retry {
        of: usize,
        how: RetryHow,
    },
    ReadStream {
        stream: usize,
        backwards: bool,
        from: Option<u64>,
        max_count: Option<usize>,
    },
    ReadAll {
        backwards: bool,
        from: Pos,
        max_count: Option<usize>,
        filter: Filter,
    },
    ReadCategory {
        category: usize,
        backwards: bool,
        from: Pos,
        max_count: Option<usize>,
        group: Option<(u32, u32)>,
    },
    Delete {
        stream: usize,
        expected: Exp,
    },
    Tombstone {
        stream: usize,
        expected: Exp,
    },
    SetMetadata {
        stream: usize,
        max_count: Option<u64>,
        truncate_before: Option<u64>,
    },
    GetMetadata {
        stream: usize,
    },
    Head,
    AppendIf {
        stream: usize,
        expected: Exp,
        events: Vec<Ev>,
        defect: Option<(Defect, usize)>,
        query: Q,
        after: After,
    },
    ReadQuery {
        query: Q,
        after: After,
        limit: Option<usize>,
    },
    Transaction {
        parts: Vec<TxPart>,
        condition: Option<(Q, After)>,
        tracking: Option<(usize, u8)>,
    },
    RetryTransaction {
        of: usize,
        how: TxRetry,
    },
    Tracking {
        source: usize,
    },
}

fn q() -> impl Strategy<Value = Q> {
    let item = (
        prop::collection::vec(0..TYPES.len(), 0..3),
        prop::collection::vec(0..TAGS.len(), 0..3),
    );
    (
        prop::collection::vec(item, 0..3),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(items, bad_tag)| Q { items, bad_tag })
}

fn after() -> impl Strategy<Value = After> {
    prop_oneof![
        2 => Just(After::Nothing),
        3 => (0usize..64).prop_map(After::Event),
        2 => Just(After::Head),
    ]
}

fn exp() -> impl Strategy<Value = Exp> {
    prop_oneof![
        1 => Just(Exp::Any),
        1 => Just(Exp::NoStream),
        1 => Just(Exp::StreamExists),
        2 => (0u64..6).prop_map(Exp::Exact),
        4 => Just(Exp::Current),
    ]
}

fn stream() -> impl Strategy<Value = usize> {
    0..STREAMS.len()
}

fn max_count() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![3 => Just(None), 4 => (1usize..4).prop_map(Some), 1 => Just(Some(0))]
}

fn pos() -> impl Strategy<Value = Pos> {
    prop_oneof![
        2 => Just(Pos::Start),
        3 => (0usize..64).prop_map(Pos::Event),
        1 => Just(Pos::End),
    ]
}

/// A consumer group, now and then an invalid one (`member >= size` or `size == 0`).
fn group() -> impl Strategy<Value = Option<(u32, u32)>> {
    prop_oneof![
        6 => Just(None),
        3 => (1u32..4, 0u32..4).prop_map(|(size, m)| Some((m % size, size))),
        1 => prop_oneof![Just(Some((2, 2))), Just(Some((0, 0)))],
    ]
}

fn filter() -> impl Strategy<Value = Filter> {
    (
        prop::option::weighted(0.25, 0..PREFIXES.len()),
        prop::option::weighted(0.3, 0..CATEGORIES.len()),
        prop_oneof![
            Just(Vec::new()),
            prop::collection::vec(0..TYPES.len(), 1..3)
        ],
        group(),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(prefix, category, types, group, invalid_category)| Filter {
                prefix,
                category,
                types,
                // One invalid thing at a time: which error comes first is not specified.
                group: if invalid_category { None } else { group },
                invalid_category,
            },
        )
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        0..TYPES.len(),
        any::<u8>(),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.3),
        prop_oneof![2 => Just(0u8), 3 => 0u8..8],
    )
        .prop_map(|(ty, n, binary, meta, tags)| Ev {
            ty,
            n,
            binary,
            meta,
            tags,
        })
}

fn defect() -> impl Strategy<Value = Option<(Defect, usize)>> {
    let kind = prop_oneof![
        Just(Defect::NoEvents),
        Just(Defect::EmptyType),
        Just(Defect::LongType),
        Just(Defect::ControlType),
        Just(Defect::BadJson),
        Just(Defect::EmptyContentType),
        Just(Defect::DuplicateId),
        Just(Defect::BadTag),
    ];
    prop_oneof![8 => Just(None), 1 => (kind, 0usize..3).prop_map(Some)]
}

fn retry_how() -> impl Strategy<Value = RetryHow> {
    prop_oneof![
        4 => Just(RetryHow::Same),
        2 => exp().prop_map(RetryHow::Expected),
        1 => stream().prop_map(RetryHow::Stream),
        1 => Just(RetryHow::Overlap),
        1 => Just(RetryHow::Reversed),
        1 => Just(RetryHow::Prefix),
    ]
}

fn tx_part() -> impl Strategy<Value = TxPart> {
    (
        prop::option::weighted(0.8, stream()),
        exp(),
        prop::collection::vec(ev(), 1..3),
    )
        .prop_map(|(stream, expected, events)| TxPart {
            stream,
            expected,
            events,
        })
}

fn source() -> impl Strategy<Value = usize> {
    prop_oneof![10 => 0..SOURCES.len() - 1, 1 => Just(SOURCES.len() - 1)]
}

fn tx_retry() -> impl Strategy<Value = TxRetry> {
    prop_oneof![
        4 => Just(TxRetry::Same),
        1 => Just(TxRetry::DropFirst),
        1 => Just(TxRetry::AddPart),
        1 => Just(TxRetry::Reversed),
        1 => (0u8..8).prop_map(TxRetry::Tracking),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (stream(), exp(), prop::collection::vec(ev(), 1..4), defect()).prop_map(
            |(stream, expected, events, defect)| Op::Append { stream, expected, events, defect }
        ),
        4 => (0usize..64, retry_how()).prop_map(|(of, how)| Op::Retry { of, how }),
        5 => (stream(), any::<bool>(), prop::option::weighted(0.4, 0u64..8), max_count()).prop_map(
            |(stream, backwards, from, max_count)| Op::ReadStream { stream, backwards, from, max_count }
        ),
        5 => (any::<bool>(), pos(), max_count(), filter()).prop_map(
            |(backwards, from, max_count, filter)| Op::ReadAll { backwards, from, max_count, filter }
        ),
        1 => (0..CATEGORIES.len() + 1, any::<bool>(), pos(), max_count(), group()).prop_map(
            |(category, backwards, from, max_count, group)| Op::ReadCategory { category, backwards, from, max_count, group }
        ),
        1 => (stream(), exp()).prop_map(|(stream, expected)| Op::Delete { stream, expected }),
        1 => (stream(), exp()).prop_map(|(stream, expected)| Op::Tombstone { stream, expected }),
        2 => (stream(), prop::option::of(0u64..4), prop::option::of(0u64..6)).prop_map(
            |(stream, max_count, truncate_before)| Op::SetMetadata { stream, max_count, truncate_before }
        ),
        1 => stream().prop_map(|stream| Op::GetMetadata { stream }),
        1 => Just(Op::Head),
        6 => (stream(), exp(), prop::collection::vec(ev(), 1..3), defect(), q(), after()).prop_map(
            |(stream, expected, events, defect, query, after)| Op::AppendIf { stream, expected, events, defect, query, after }
        ),
        4 => (q(), after(), max_count()).prop_map(
            |(query, after, limit)| Op::ReadQuery { query, after, limit }
        ),
        6 => (
            prop::collection::vec(tx_part(), 0..4),
            prop::option::weighted(0.35, (q(), after())),
            prop::option::weighted(0.5, (source(), 0u8..8)),
        ).prop_map(|(parts, condition, tracking)| Op::Transaction { parts, condition, tracking }),
        2 => (0usize..64, tx_retry()).prop_map(|(of, how)| Op::RetryTransaction { of, how }),
        1 => source().prop_map(|source| Op::Tracking { source }),
    ]
}

fn env<T: std::str::FromStr>(key: &str) -> Option<T> {
    let raw = std::env::var(key).ok()?;
    match raw.trim().parse() {
        Ok(v) => Some(v),
        Err(_) => panic!("{key}={raw:?} is not a number"),
    }
}

/// Runs the model test against stores made by `factory` (one per sequence).
///
/// Panics with the seed and the shrunk operation sequence when the store and the model
/// disagree.
pub fn run<F, Fut, S, G>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (S, G)>,
    S: TestStore,
    G: Send + 'static,
{
    let cases = env("FOLDSTORE_PROPTEST_CASES").unwrap_or(DEFAULT_CASES);
    let seed: u64 =
        env("FOLDSTORE_PROPTEST_SEED").unwrap_or_else(|| Uuid::new_v4().as_u128() as u64);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 512,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let rt = super::runtime();
    let strategy = prop::collection::vec(op(), 1..=MAX_OPS);
    let stats = Mutex::new(BTreeMap::new());
    let result = runner.run(&strategy, |ops| {
        rt.block_on(async {
            match tokio::time::timeout(SEQUENCE_TIMEOUT, check_sequence(&factory, &ops, &stats))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(TestCaseError::fail(format!(
                    "the sequence did not finish within {SEQUENCE_TIMEOUT:?}: an operation hangs"
                ))),
            }
        })
    });
    if std::env::var_os("FOLDSTORE_PROPTEST_STATS").is_some() {
        let stats = stats.lock().unwrap_or_else(|p| p.into_inner());
        for (outcome, count) in stats.iter() {
            eprintln!("{count:>7}  {outcome}");
        }
    }
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            let listing: Vec<String> = ops
                .iter()
                .enumerate()
                .map(|(i, op)| format!("  {i:>2}: {op:?}"))
                .collect();
            panic!(
                "the store disagrees with the reference model: {reason}\n\
                 minimal operation sequence:\n{}\n\
                 replay with FOLDSTORE_PROPTEST_SEED={seed} FOLDSTORE_PROPTEST_CASES={cases}",
                listing.join("\n")
            );
        }
        Err(TestError::Abort(reason)) => {
            panic!("the model test aborted: {reason} (FOLDSTORE_PROPTEST_SEED={seed})")
        }
    }
}

async fn check_sequence<F, Fut, S, G>(
    factory: &F,
    ops: &[Op],
    stats: &Mutex<BTreeMap<String, usize>>,
) -> Result<(), TestCaseError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = (S, G)>,
    S: TestStore,
{
    let (store, guard) = factory().await;
    // Live subscriptions opened before the first operation must deliver the whole log
    // (and the filtered part of it) as it grows, whatever the operations do.
    let mut live_all = store
        .subscribe_to_all(SubscribeFrom::Start, EventFilter::all())
        .await
        .map_err(|e| TestCaseError::fail(format!("subscribe_to_all failed: {e:?}")))?;
    let live_filter = EventFilter::category("account").expect("valid category");
    let mut live_account = store
        .subscribe_to_all(SubscribeFrom::Start, live_filter.clone())
        .await
        .map_err(|e| TestCaseError::fail(format!("subscribe_to_all failed: {e:?}")))?;
    let mut live_streams = Vec::new();
    for i in 0..STREAMS.len() {
        let sub = store
            .subscribe_to_stream(&stream_name(i), SubscribeStreamFrom::Start)
            .await
            .map_err(|e| TestCaseError::fail(format!("subscribe_to_stream failed: {e:?}")))?;
        live_streams.push(LiveStream {
            sub,
            last: None,
            ended: false,
        });
    }
    let (mut got_all, mut got_account) = (Vec::new(), Vec::new());
    let mut h = Harness {
        store,
        model: Model::new(),
        positions: Vec::new(),
        attempts: Vec::new(),
        tx_attempts: Vec::new(),
        next_id: 1,
        stats: BTreeMap::new(),
    };
    for (i, op) in ops.iter().enumerate() {
        let step = async {
            h.apply(op).await?;
            h.sync_log().await?;
            // Pull the live subscriptions up to the new end of the log, so they wait
            // at the head between operations and deliver new commits live.
            let accounts = h
                .model
                .read_all(None, Direction::Forwards, usize::MAX, &live_filter);
            let accounts = accounts.map_err(|r| format!("model: {r:?}"))?.len();
            pull(&mut live_all, &mut got_all, h.model.log().len(), "$all").await?;
            pull(
                &mut live_account,
                &mut got_account,
                accounts,
                "category account",
            )
            .await?;
            for (i, live) in live_streams.iter_mut().enumerate() {
                h.pull_stream(i, live).await?;
            }
            Ok::<(), String>(())
        };
        step.await
            .map_err(|m| TestCaseError::fail(format!("at operation {i} ({op:?}): {m}")))?;
    }
    {
        let mut all = stats.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in std::mem::take(&mut h.stats) {
            *all.entry(k).or_default() += v;
        }
    }
    h.check_subscriptions()
        .await
        .map_err(|m| TestCaseError::fail(format!("after the last operation: {m}")))?;
    let everything: Vec<usize> = (0..h.model.log().len()).collect();
    let accounts = h
        .model
        .read_all(None, Direction::Forwards, usize::MAX, &live_filter)
        .map_err(|r| TestCaseError::fail(format!("model: {r:?}")))?;
    for (sub, got, want, what) in [
        (
            &mut live_all,
            got_all,
            everything,
            "a live subscription to $all",
        ),
        (
            &mut live_account,
            got_account,
            accounts,
            "a live subscription to category account",
        ),
    ] {
        h.check_live(sub, &got, &want, what)
            .await
            .map_err(|m| TestCaseError::fail(format!("after the last operation: {m}")))?;
    }
    // The store and its subscriptions go before the guard (a backend's directory).
    drop((h, live_all, live_account, live_streams));
    drop(guard);
    Ok(())
}

/// Pulls events from a live subscription until `got` holds `len` of them.
async fn pull(
    sub: &mut EventSubscription,
    got: &mut Vec<RecordedEvent>,
    len: usize,
    what: &str,
) -> Check {
    while got.len() < len {
        match tokio::time::timeout(WAIT, sub.next()).await {
            Ok(Some(Ok(e))) => got.push(e),
            other => {
                return Err(format!(
                    "a live subscription to {what} delivered {} events, then {other:?}; the log has {len}",
                    got.len()
                ));
            }
        }
    }
    Ok(())
}

/// A subscription to one stream, opened before the first operation.
struct LiveStream {
    sub: EventSubscription,
    /// The last revision it delivered.
    last: Option<u64>,
    /// Whether it ended (with `StreamTombstoned`).
    ended: bool,
}

struct Harness<S> {
    store: S,
    model: Model,
    /// The store's position of each event of the model's log, learnt from `$all`.
    positions: Vec<Position>,
    /// Every append attempted with events, for retries: stream, expectation, events,
    /// and the condition of a conditional append.
    attempts: Vec<(StreamName, ExpectedRevision, Vec<NewEvent>, Option<Cond>)>,
    /// Every transaction attempted, for retries.
    tx_attempts: Vec<TxAttempt>,
    next_id: u128,
    /// How often each operation ended how (printed with `FOLDSTORE_PROPTEST_STATS`).
    stats: BTreeMap<String, usize>,
}

type Check = Result<(), String>;

/// A condition as the store and the model get it: the query, the store's `after` and
/// the model's (a log index).
#[derive(Debug, Clone)]
struct Cond {
    query: Query,
    after: Option<Position>,
    model_after: Option<usize>,
}

/// A transaction as the store and the model get it.
#[derive(Debug, Clone)]
struct TxAttempt {
    parts: Vec<ModelPart>,
    condition: Option<Cond>,
    tracking: Option<(String, u128)>,
}

impl TxAttempt {
    fn store_transaction(&self) -> AppendTransaction {
        AppendTransaction {
            parts: self
                .parts
                .iter()
                .map(|p| match &p.stream {
                    Some(s) => StreamAppend::new(s.clone(), p.expected, p.events.clone()),
                    None => StreamAppend::without_stream(p.events.clone()),
                })
                .collect(),
            condition: self
                .condition
                .as_ref()
                .map(|c| AppendCondition::new(c.query.clone(), c.after)),
            tracking: self
                .tracking
                .as_ref()
                .map(|(s, p)| Tracking::new(s.clone(), Position::new(*p))),
        }
    }
}

fn stream_name(i: usize) -> StreamName {
    StreamName::new(STREAMS[i]).expect("the model test's stream names are valid")
}

fn group_of(g: Option<(u32, u32)>) -> Option<ConsumerGroup> {
    g.map(|(member, size)| ConsumerGroup { member, size })
}

fn compare_refusals(what: &str, model: &Refusal, store: Refusal) -> Check {
    if *model == store {
        Ok(())
    } else {
        Err(format!(
            "{what}: the model refuses with {model:?}, the store with {store:?}"
        ))
    }
}

impl<S: TestStore> Harness<S> {
    fn note<T>(&mut self, what: &str, outcome: &Result<T, Refusal>) {
        let outcome = match outcome {
            Ok(_) => "ok".to_owned(),
            Err(r) => {
                let r = format!("{r:?}");
                r.split([' ', '{']).next().unwrap_or_default().to_owned()
            }
        };
        *self.stats.entry(format!("{what}: {outcome}")).or_default() += 1;
    }

    fn fresh_id(&mut self) -> Uuid {
        self.next_id += 1;
        Uuid::from_u128(self.next_id)
    }

    fn resolve(&self, stream: &StreamName, e: Exp) -> ExpectedRevision {
        match e {
            Exp::Any => ExpectedRevision::Any,
            Exp::NoStream => ExpectedRevision::NoStream,
            Exp::StreamExists => ExpectedRevision::StreamExists,
            Exp::Exact(n) => ExpectedRevision::Exact(n),
            Exp::Current => match self.model.current(stream) {
                CurrentRevision::NoStream => ExpectedRevision::NoStream,
                CurrentRevision::Current(n) => ExpectedRevision::Exact(n),
            },
        }
    }

    fn new_event(&mut self, e: Ev) -> NewEvent {
        let id = self.fresh_id();
        let ty = TYPES[e.ty];
        let mut event = if e.binary {
            NewEvent::raw(ty, vec![e.n, 0xff, 0], "application/octet-stream")
        } else {
            NewEvent::raw(ty, format!("{{\"n\":{}}}", e.n), JSON)
        };
        if e.meta {
            event = event.with_metadata(Metadata::new().with("k", e.n));
        }
        let tags = (0..TAGS.len())
            .filter(|i| e.tags & (1 << i) != 0)
            .map(|i| TAGS[i]);
        event.with_tags(tags).with_id(id)
    }

    fn query_of(q: &Q) -> Query {
        let mut query = Query::from_items(q.items.iter().map(|(types, tags)| {
            QueryItem::new()
                .types(types.iter().map(|&t| TYPES[t]))
                .tags(tags.iter().map(|&t| TAGS[t]))
        }));
        if q.bad_tag {
            query = query.or(QueryItem::new().tags([""]));
        }
        query
    }

    /// The store's and the model's `after`.
    fn after_of(&self, a: After) -> (Option<Position>, Option<usize>) {
        let len = self.positions.len();
        match a {
            After::Nothing => (None, None),
            // Below every position: the same as no `after`.
            After::Event(_) | After::Head if len == 0 => (Some(Position::ZERO), None),
            After::Event(k) => (Some(self.positions[k % len]), Some(k % len)),
            After::Head => (Some(self.positions[len - 1]), Some(len - 1)),
        }
    }

    fn position(&self, index: usize) -> Result<Position, String> {
        self.positions
            .get(index)
            .copied()
            .ok_or_else(|| format!("no known position for log index {index}"))
    }

    fn start_of(&self, p: Pos) -> (Option<Position>, Option<usize>) {
        let len = self.positions.len();
        match p {
            Pos::Start => (None, None),
            Pos::Event(_) | Pos::End if len == 0 => (Some(Position::ZERO), Some(0)),
            Pos::Event(k) => (Some(self.positions[k % len]), Some(k % len)),
            Pos::End => (Some(self.positions[len - 1].next()), Some(len)),
        }
    }

    fn compare_events(&self, what: &str, store: &[RecordedEvent], model: &[usize]) -> Check {
        let brief = |e: &RecordedEvent| format!("{}@{}#{}", e.stream, e.revision, e.id);
        if store.len() != model.len() {
            let got: Vec<String> = store.iter().map(brief).collect();
            let want: Vec<String> = model
                .iter()
                .map(|&i| {
                    let m = &self.model.log()[i];
                    format!("{}@{}#{}", m.stream, m.revision, m.id)
                })
                .collect();
            return Err(format!(
                "{what}: the store returned {got:?}, the model {want:?}"
            ));
        }
        for (e, &i) in store.iter().zip(model) {
            let m = &self.model.log()[i];
            let same = e.id == m.id
                && e.stream == m.stream
                && e.event_type == m.event_type
                && e.revision == m.revision
                && e.data == m.data
                && e.content_type == m.content_type
                && e.metadata.to_map() == m.metadata
                && e.tags == m.tags;
            if !same {
                return Err(format!("{what}: the store returned {e:?}, the model {m:?}"));
            }
            if e.position != self.position(i)? {
                return Err(format!(
                    "{what}: event {} has position {} here but {} in $all",
                    e.id,
                    e.position,
                    self.position(i)?
                ));
            }
        }
        Ok(())
    }

    /// Reads the store's whole `$all`, compares it with the model's log and learns the
    /// positions.
    async fn sync_log(&mut self) -> Check {
        let log = self
            .store
            .read_all(ReadAllOptions::forwards())
            .await
            .map_err(|e| format!("read_all failed: {e:?}"))?;
        for w in log.windows(2) {
            if w[0].position >= w[1].position {
                return Err(format!(
                    "$all positions must strictly increase: {} then {}",
                    w[0].position, w[1].position
                ));
            }
        }
        self.positions = log.iter().map(|e| e.position).collect();
        let all: Vec<usize> = (0..self.model.log().len()).collect();
        self.compare_events("$all after the operation", &log, &all)
    }

    async fn append(
        &mut self,
        stream: StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        cond: Option<Cond>,
    ) -> Check {
        if !events.is_empty() {
            self.attempts
                .push((stream.clone(), expected, events.clone(), cond.clone()));
        }
        let kind = if cond.is_some() {
            "append_if"
        } else {
            "append"
        };
        let (want, first_match) = match &cond {
            None => (self.model.append(&stream, expected, &events), None),
            Some(c) => (
                self.model
                    .append_if(&stream, expected, &events, &c.query, c.model_after),
                self.model.first_match(&c.query, c.model_after),
            ),
        };
        match &want {
            Ok(m) if !m.wrote => {
                *self.stats.entry(format!("{kind}: retry")).or_default() += 1;
            }
            _ => self.note(kind, &want),
        }
        let got = match &cond {
            None => self.store.append(&stream, expected, events.clone()).await,
            Some(c) => {
                let condition = AppendCondition::new(c.query.clone(), c.after);
                self.store
                    .append_if(&stream, expected, events.clone(), condition)
                    .await
            }
        };
        if let (Err(Refusal::ConditionFailed), Err(AppendError::ConditionFailed { position })) =
            (&want, &got)
        {
            let index = first_match.ok_or("the model found no match")?;
            if *position != self.position(index)? {
                return Err(format!(
                    "ConditionFailed names position {position}, the first match after `after` is at {}",
                    self.position(index)?
                ));
            }
        }
        match (want, got) {
            (Ok(m), Ok(s)) => {
                self.sync_log().await?;
                if s.next_expected_revision != m.next_expected_revision
                    || s.position != self.position(m.last_index)?
                {
                    return Err(format!(
                        "append answered {s:?}, the model revision {} at log index {} (position {})",
                        m.next_expected_revision,
                        m.last_index,
                        self.position(m.last_index)?
                    ));
                }
                Ok(())
            }
            (Err(m), Err(s)) => {
                compare_refusals("append", &m, Refusal::from(&s))?;
                if let AppendError::DuplicateEventId {
                    event_id,
                    existing_stream,
                    existing_revision,
                } = s
                {
                    let named = self.model.log().iter().find(|e| e.id == event_id);
                    let ok = events.iter().any(|e| e.id == event_id)
                        && named.is_some_and(|e| {
                            e.stream == existing_stream && e.revision == existing_revision
                        });
                    if !ok {
                        return Err(format!(
                            "DuplicateEventId must name one of the append's stored ids and where it is stored; \
                             it named {event_id} in {existing_stream} at {existing_revision}"
                        ));
                    }
                }
                Ok(())
            }
            (Ok(m), Err(s)) => Err(format!(
                "append: the model succeeds ({m:?}), the store refuses: {s:?}"
            )),
            (Err(m), Ok(s)) => Err(format!(
                "append: the model refuses ({m:?}), the store answers {s:?}"
            )),
        }
    }

    /// Runs a transaction on the model and the store and compares the answers.
    async fn transaction(&mut self, attempt: TxAttempt) -> Check {
        self.tx_attempts.push(attempt.clone());
        for p in &attempt.parts {
            if !p.events.is_empty() {
                let expected = if p.stream.is_some() {
                    p.expected
                } else {
                    ExpectedRevision::NoStream
                };
                self.attempts
                    .push((Model::stream_of(p), expected, p.events.clone(), None));
            }
        }
        let condition = attempt
            .condition
            .as_ref()
            .map(|c| (&c.query, c.model_after));
        let tracking = attempt.tracking.as_ref().map(|(s, p)| (s.as_str(), *p));
        let first_match = condition.and_then(|(q, a)| self.model.first_match(q, a));
        let want = self.model.transaction(&attempt.parts, condition, tracking);
        match &want {
            Ok(m) if !m.wrote => {
                *self
                    .stats
                    .entry("transaction: retry".to_owned())
                    .or_default() += 1;
            }
            _ => self.note("transaction", &want),
        }
        let tx = attempt.store_transaction();
        let got = self.store.append_transaction(tx.clone()).await;
        let what = format!("append_transaction({tx:?})");
        match (want, got) {
            (Ok(m), Ok(s)) => {
                self.sync_log().await?;
                let streams: Vec<(StreamName, u64)> = s
                    .streams
                    .iter()
                    .map(|r| (r.stream.clone(), r.next_expected_revision))
                    .collect();
                let first = m.first_index.map(|i| self.position(i)).transpose()?;
                let last = m.last_index.map(|i| self.position(i)).transpose()?;
                if streams != m.streams || s.first_position != first || s.last_position != last {
                    return Err(format!(
                        "{what} answered {s:?}, the model {m:?} (positions {first:?}..{last:?})"
                    ));
                }
                Ok(())
            }
            (Err(m), Err(s)) => {
                compare_refusals(&what, &m, Refusal::from(&s))?;
                match s {
                    AppendError::ConditionFailed { position } => {
                        let index = first_match.ok_or("the model found no match")?;
                        if position != self.position(index)? {
                            return Err(format!(
                                "{what}: ConditionFailed names position {position}, the first match is at {}",
                                self.position(index)?
                            ));
                        }
                    }
                    AppendError::DuplicateEventId {
                        event_id,
                        existing_stream,
                        existing_revision,
                    } => {
                        let named = self.model.log().iter().find(|e| e.id == event_id);
                        let ok = tx.events().any(|e| e.id == event_id)
                            && named.is_some_and(|e| {
                                e.stream == existing_stream && e.revision == existing_revision
                            });
                        if !ok {
                            return Err(format!(
                                "{what}: DuplicateEventId must name one of the transaction's stored ids and where it is stored; \
                                 it named {event_id} in {existing_stream} at {existing_revision}"
                            ));
                        }
                    }
                    _ => {}
                }
                Ok(())
            }
            (m, s) => Err(format!("{what}: the model answers {m:?}, the store {s:?}")),
        }
    }

    async fn apply(&mut self, op: &Op) -> Check {
        match op {
            Op::Append {
                stream,
                expected,
                events,
                defect,
            } => {
                let name = stream_name(*stream);
                let expected = self.resolve(&name, *expected);
                let mut batch: Vec<NewEvent> = events.iter().map(|e| self.new_event(*e)).collect();
                if let Some((defect, at)) = defect {
                    let at = (*at).min(batch.len() - 1);
                    match defect {
                        Defect::NoEvents => batch.clear(),
                        Defect::DuplicateId => {
                            let copy = batch[at].clone();
                            batch.push(copy);
                        }
                        Defect::EmptyType => batch[at].event_type = String::new(),
                        Defect::LongType => batch[at].event_type = "T".repeat(201),
                        Defect::ControlType => batch[at].event_type = "A\nB".to_owned(),
                        Defect::BadJson => {
                            batch[at].data = "{bad".into();
                            batch[at].content_type = JSON.to_owned();
                        }
                        Defect::EmptyContentType => batch[at].content_type = String::new(),
                        Defect::BadTag => batch[at].tags = vec!["a\tb".to_owned()],
                    }
                }
                self.append(name, expected, batch, None).await
            }
            Op::AppendIf {
                stream,
                expected,
                events,
                defect,
                query,
                after,
            } => {
                let name = stream_name(*stream);
                let expected = self.resolve(&name, *expected);
                let mut batch: Vec<NewEvent> = events.iter().map(|e| self.new_event(*e)).collect();
                if let Some((Defect::BadTag, at)) = defect {
                    let at = (*at).min(batch.len() - 1);
                    batch[at].tags = vec![String::new()];
                }
                let (after, model_after) = self.after_of(*after);
                let cond = Cond {
                    query: Self::query_of(query),
                    after,
                    model_after,
                };
                self.append(name, expected, batch, Some(cond)).await
            }
            Op::ReadQuery {
                query,
                after,
                limit,
            } => {
                let query = Self::query_of(query);
                let (after, model_after) = self.after_of(*after);
                let options = ReadQueryOptions {
                    after,
                    limit: *limit,
                };
                let want = self
                    .model
                    .read_query(&query, model_after, limit.unwrap_or(usize::MAX));
                self.note("read_query", &want);
                let got = self.store.read_query(&query, options.clone()).await;
                let what = format!("read_query({query:?}, {options:?})");
                match (want, got) {
                    (Ok(m), Ok(s)) => self.compare_events(&what, &s, &m),
                    (Err(m), Err(s)) => compare_refusals(&what, &m, Refusal::from(&s)),
                    (m, s) => Err(format!("{what}: the model answers {m:?}, the store {s:?}")),
                }
            }
            Op::Retry { of, how } => {
                if self.attempts.is_empty() {
                    return Ok(());
                }
                let (stream, expected, mut events, cond) =
                    self.attempts[of % self.attempts.len()].clone();
                let (stream, expected) = match how {
                    RetryHow::Same => (stream, expected),
                    RetryHow::Expected(e) => {
                        let e = self.resolve(&stream, *e);
                        (stream, e)
                    }
                    RetryHow::Stream(s) => (stream_name(*s), expected),
                    RetryHow::Overlap => {
                        events.truncate(1);
                        let extra = self.new_event(Ev {
                            ty: 0,
                            n: 0,
                            binary: false,
                            meta: false,
                            tags: 0,
                        });
                        events.push(extra);
                        (stream, expected)
                    }
                    RetryHow::Reversed => {
                        events.reverse();
                        (stream, expected)
                    }
                    RetryHow::Prefix => {
                        events.truncate(1);
                        (stream, expected)
                    }
                };
                self.append(stream, expected, events, cond).await
            }
            Op::ReadStream {
                stream,
                backwards,
                from,
                max_count,
            } => {
                let name = stream_name(*stream);
                let direction = if *backwards {
                    Direction::Backwards
                } else {
                    Direction::Forwards
                };
                let options = ReadStreamOptions {
                    from: *from,
                    direction,
                    max_count: max_count.unwrap_or(usize::MAX),
                };
                let want =
                    self.model
                        .read_stream(&name, options.from, direction, options.max_count);
                self.note("read_stream", &want);
                let got = self.store.read_stream(&name, options.clone()).await;
                let what = format!("read_stream({name}, {options:?})");
                match (want, got) {
                    (Ok(m), Ok(s)) => self.compare_events(&what, &s, &m),
                    (Err(m), Err(s)) => compare_refusals(&what, &m, Refusal::from(&s)),
                    (m, s) => Err(format!("{what}: the model answers {m:?}, the store {s:?}")),
                }
            }
            Op::ReadAll {
                backwards,
                from,
                max_count,
                filter,
            } => {
                let direction = if *backwards {
                    Direction::Backwards
                } else {
                    Direction::Forwards
                };
                let (from, model_from) = self.start_of(*from);
                let category = if filter.invalid_category {
                    Some("bad-category".to_owned())
                } else {
                    filter.category.map(|c| CATEGORIES[c].to_owned())
                };
                let f = EventFilter {
                    stream_prefix: filter.prefix.map(|p| PREFIXES[p].to_owned()),
                    category,
                    event_types: filter.types.iter().map(|&t| TYPES[t].to_owned()).collect(),
                    consumer_group: group_of(filter.group),
                };
                let options = ReadAllOptions {
                    from,
                    direction,
                    max_count: max_count.unwrap_or(usize::MAX),
                    filter: f,
                };
                let want =
                    self.model
                        .read_all(model_from, direction, options.max_count, &options.filter);
                self.note("read_all", &want);
                let got = self.store.read_all(options.clone()).await;
                let what = format!("read_all({options:?})");
                match (want, got) {
                    (Ok(m), Ok(s)) => self.compare_events(&what, &s, &m),
                    (Err(m), Err(s)) => compare_refusals(&what, &m, Refusal::from(&s)),
                    (m, s) => Err(format!("{what}: the model answers {m:?}, the store {s:?}")),
                }
            }
            Op::ReadCategory {
                category,
                backwards,
                from,
                max_count,
                group,
            } => {
                let direction = if *backwards {
                    Direction::Backwards
                } else {
                    Direction::Forwards
                };
                let (from, model_from) = self.start_of(*from);
                let category = CATEGORIES.get(*category).copied().unwrap_or("bad-category");
                let group = if CATEGORIES.contains(&category) {
                    group_of(*group)
                } else {
                    None
                };
                let options = ReadAllOptions {
                    from,
                    direction,
                    max_count: max_count.unwrap_or(usize::MAX),
                    filter: EventFilter {
                        consumer_group: group,
                        ..EventFilter::default()
                    },
                };
                let want = self.model.read_category(
                    category,
                    model_from,
                    direction,
                    options.max_count,
                    group,
                );
                self.note("read_category", &want);
                let got = self.store.read_category(category, options.clone()).await;
                let what = format!("read_category({category}, {options:?})");
                match (want, got) {
                    (Ok(m), Ok(s)) => self.compare_events(&what, &s, &m),
                    (Err(m), Err(s)) => compare_refusals(&what, &m, Refusal::from(&s)),
                    (m, s) => Err(format!("{what}: the model answers {m:?}, the store {s:?}")),
                }
            }
            Op::Delete { stream, expected } | Op::Tombstone { stream, expected } => {
                let tombstone = matches!(op, Op::Tombstone { .. });
                let name = stream_name(*stream);
                let expected = self.resolve(&name, *expected);
                let want = self.model.delete(&name, expected, tombstone);
                self.note(if tombstone { "tombstone" } else { "delete" }, &want);
                let got = if tombstone {
                    self.store.tombstone_stream(&name, expected).await
                } else {
                    self.store.delete_stream(&name, expected).await
                };
                let what = format!(
                    "{}({name}, {expected:?})",
                    if tombstone {
                        "tombstone_stream"
                    } else {
                        "delete_stream"
                    }
                );
                match (want, got) {
                    (Ok(()), Ok(())) => Ok(()),
                    (Err(m), Err(s)) => compare_refusals(&what, &m, Refusal::from(&s)),
                    (m, s) => Err(format!("{what}: the model answers {m:?}, the store {s:?}")),
                }
            }
            Op::SetMetadata {
                stream,
                max_count,
                truncate_before,
            } => {
                let name = stream_name(*stream);
                let meta = StreamMetadata {
                    max_count: *max_count,
                    truncate_before: *truncate_before,
                    ..StreamMetadata::default()
                };
                let want = self.model.set_metadata(&name, meta.clone());
                self.note("set_metadata", &want);
                let got = self.store.set_stream_metadata(&name, meta.clone()).await;
                let what = format!("set_stream_metadata({name}, {meta:?})");
                match (want, got) {
                    (Ok(()), Ok(())) => Ok(()),
                    (Err(m), Err(s)) => compare_refusals(&what, &m, Refusal::from(&s)),
                    (m, s) => Err(format!("{what}: the model answers {m:?}, the store {s:?}")),
                }
            }
            Op::GetMetadata { stream } => {
                let name = stream_name(*stream);
                let want = self.model.metadata(&name);
                let got = self.store.stream_metadata(&name).await;
                let what = format!("stream_metadata({name})");
                match (want, got) {
                    (Ok(m), Ok(s)) if m == s => Ok(()),
                    (Err(m), Err(s)) => compare_refusals(&what, &m, Refusal::from(&s)),
                    (m, s) => Err(format!("{what}: the model answers {m:?}, the store {s:?}")),
                }
            }
            Op::Transaction {
                parts,
                condition,
                tracking,
            } => {
                let mut model_parts = Vec::with_capacity(parts.len());
                for p in parts {
                    let events: Vec<NewEvent> =
                        p.events.iter().map(|e| self.new_event(*e)).collect();
                    let stream = p.stream.map(stream_name);
                    let expected = match &stream {
                        Some(s) => self.resolve(s, p.expected),
                        None => ExpectedRevision::NoStream,
                    };
                    model_parts.push(ModelPart {
                        stream,
                        expected,
                        events,
                    });
                }
                let condition = condition.as_ref().map(|(q, a)| {
                    let (after, model_after) = self.after_of(*a);
                    Cond {
                        query: Self::query_of(q),
                        after,
                        model_after,
                    }
                });
                let tracking = tracking.map(|(s, p)| (SOURCES[s].to_owned(), u128::from(p)));
                self.transaction(TxAttempt {
                    parts: model_parts,
                    condition,
                    tracking,
                })
                .await
            }
            Op::RetryTransaction { of, how } => {
                if self.tx_attempts.is_empty() {
                    return Ok(());
                }
                let mut attempt = self.tx_attempts[of % self.tx_attempts.len()].clone();
                match how {
                    TxRetry::Same => {}
                    TxRetry::DropFirst => {
                        if !attempt.parts.is_empty() {
                            attempt.parts.remove(0);
                        }
                    }
                    TxRetry::AddPart => {
                        let event = self.new_event(Ev {
                            ty: 1,
                            n: 0,
                            binary: false,
                            meta: false,
                            tags: 1,
                        });
                        attempt.parts.push(ModelPart {
                            stream: None,
                            expected: ExpectedRevision::NoStream,
                            events: vec![event],
                        });
                    }
                    TxRetry::Reversed => attempt.parts.reverse(),
                    TxRetry::Tracking(p) => {
                        attempt.tracking = Some((SOURCES[0].to_owned(), u128::from(*p)));
                    }
                }
                self.transaction(attempt).await
            }
            Op::Tracking { source } => {
                let source = SOURCES[*source];
                let want = self.model.tracking(source);
                self.note("tracking", &want);
                let got = self.store.tracking(source).await;
                let what = format!("tracking({source:?})");
                match (want, got) {
                    (Ok(m), Ok(s)) if m == s.map(Position::as_u128) => Ok(()),
                    (Err(m), Err(s)) => compare_refusals(&what, &m, Refusal::from(&s)),
                    (m, s) => Err(format!("{what}: the model answers {m:?}, the store {s:?}")),
                }
            }
            Op::Head => {
                let got = self
                    .store
                    .head_position()
                    .await
                    .map_err(|e| format!("head_position failed: {e:?}"))?;
                let want = match self.model.head() {
                    Some(i) => Some(self.position(i)?),
                    None => None,
                };
                if got == want {
                    Ok(())
                } else {
                    Err(format!(
                        "head_position is {got:?}, the last event of $all is at {want:?}"
                    ))
                }
            }
        }
    }

    /// Subscriptions deliver what reads return: `$all` from the start, and each
    /// stream's visible events (or `StreamTombstoned`).
    /// Pulls a live stream subscription up to the stream's last visible revision. Its
    /// revisions must strictly increase, its events match the log, and it must end with
    /// `StreamTombstoned` once the stream is tombstoned.
    async fn pull_stream(&self, i: usize, live: &mut LiveStream) -> Check {
        if live.ended {
            return Ok(());
        }
        let name = stream_name(i);
        let what = format!("a live subscription to {name}");
        if self.model.is_tombstoned(&name) {
            return match tokio::time::timeout(WAIT, live.sub.next()).await {
                Ok(Some(Err(SubscriptionError::StreamTombstoned { .. }))) => {
                    live.ended = true;
                    Ok(())
                }
                other => Err(format!(
                    "{what} should end with StreamTombstoned, got {other:?}"
                )),
            };
        }
        let Ok(visible) = self
            .model
            .read_stream(&name, None, Direction::Forwards, usize::MAX)
        else {
            return Ok(());
        };
        let Some(&last) = visible.last() else {
            return Ok(());
        };
        let target = self.model.log()[last].revision;
        while live.last.is_none_or(|r| r < target) {
            let e = match tokio::time::timeout(WAIT, live.sub.next()).await {
                Ok(Some(Ok(e))) => e,
                other => {
                    return Err(format!(
                        "{what} stopped after revision {:?} (the stream is at {target}): {other:?}",
                        live.last
                    ));
                }
            };
            if live.last.is_some_and(|r| e.revision <= r) {
                return Err(format!(
                    "{what} delivered revision {} after {:?}",
                    e.revision, live.last
                ));
            }
            let Some(index) = self.model.log().iter().position(|m| m.id == e.id) else {
                return Err(format!(
                    "{what} delivered an event that is not in the log: {e:?}"
                ));
            };
            self.compare_events(&what, std::slice::from_ref(&e), &[index])?;
            live.last = Some(e.revision);
        }
        Ok(())
    }

    /// A subscription opened before the first operation delivered exactly `want`.
    async fn check_live(
        &self,
        sub: &mut EventSubscription,
        got: &[RecordedEvent],
        want: &[usize],
        what: &str,
    ) -> Check {
        self.compare_events(what, got, want)?;
        match tokio::time::timeout(Duration::from_millis(20), sub.next()).await {
            Err(_) => Ok(()),
            Ok(extra) => Err(format!(
                "{what} delivered more than the log holds: {extra:?}"
            )),
        }
    }

    async fn check_subscriptions(&mut self) -> Check {
        self.sync_log().await?;
        let mut sub = self
            .store
            .subscribe_to_all(SubscribeFrom::Start, EventFilter::all())
            .await
            .map_err(|e| format!("subscribe_to_all failed: {e:?}"))?;
        let mut got = Vec::new();
        for _ in 0..self.model.log().len() {
            match tokio::time::timeout(WAIT, sub.next()).await {
                Ok(Some(Ok(e))) => got.push(e),
                other => return Err(format!("subscribe_to_all(Start) stopped early: {other:?}")),
            }
        }
        let all: Vec<usize> = (0..self.model.log().len()).collect();
        self.compare_events("subscribe_to_all(Start)", &got, &all)?;
        for i in 0..STREAMS.len() {
            let name = stream_name(i);
            let mut sub = self
                .store
                .subscribe_to_stream(&name, SubscribeStreamFrom::Start)
                .await
                .map_err(|e| format!("subscribe_to_stream({name}) failed: {e:?}"))?;
            if self.model.is_tombstoned(&name) {
                match tokio::time::timeout(WAIT, sub.next()).await {
                    Ok(Some(Err(SubscriptionError::StreamTombstoned { .. }))) => continue,
                    other => {
                        return Err(format!(
                            "subscribe_to_stream({name}) of a tombstoned stream should end with StreamTombstoned, got {other:?}"
                        ));
                    }
                }
            }
            let Ok(want) = self
                .model
                .read_stream(&name, None, Direction::Forwards, usize::MAX)
            else {
                continue;
            };
            let mut got = Vec::new();
            for _ in 0..want.len() {
                match tokio::time::timeout(WAIT, sub.next()).await {
                    Ok(Some(Ok(e))) => got.push(e),
                    other => {
                        return Err(format!(
                            "subscribe_to_stream({name}) stopped early: {other:?}"
                        ));
                    }
                }
            }
            self.compare_events(&format!("subscribe_to_stream({name}, Start)"), &got, &want)?;
        }
        Ok(())
    }
}
