//! Races forced with a barrier, not with sleeps: two writers decide on the same state,
//! and the loser must re-read and decide again rather than overdraw an account.
//!
//! [`GatedStore`] holds the first two appends until both have arrived, so both
//! decisions are made before either is written.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bank::Design;
use bank::account::{AccountCommand, AccountError, AccountId};
use bank::dcb::DcbBank;
use bank::handler::{AccountHandler, HandleError};
use bank::invariants::{self, Expected};
use bank::saga::TransferSaga;
use bank::transfer::{self, Outcome, TransferRequest};
use foldstore_core::dcb::{AppendCondition, Query, ReadQueryOptions};
use foldstore_core::{
    AppendError, AppendResult, DeleteError, EventFilter, EventStore, EventSubscription,
    ExpectedRevision, InMemoryStore, MetadataError, NewEvent, Position, ReadAllOptions, ReadError,
    ReadStreamOptions, RecordedEvent, StreamMetadata, StreamName, SubscribeFrom,
    SubscribeStreamFrom,
};
use tokio::sync::Barrier;
use uuid::Uuid;

/// Delegates to an in-memory store; once armed, the next two appends wait for each
/// other.
struct GatedStore {
    inner: InMemoryStore,
    gate: Barrier,
    gated: AtomicUsize,
}

impl GatedStore {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: InMemoryStore::new(),
            gate: Barrier::new(2),
            gated: AtomicUsize::new(2),
        })
    }

    /// From now on, the next two appends (of either kind) wait for each other.
    fn arm(&self) {
        self.gated.store(0, Ordering::SeqCst);
    }

    async fn pass(&self) {
        let n = self.gated.fetch_add(1, Ordering::SeqCst);
        if n < 2 {
            self.gate.wait().await;
        }
    }
}

#[async_trait]
impl EventStore for GatedStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, AppendError> {
        self.pass().await;
        self.inner.append(stream, expected, events).await
    }
    async fn append_if(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> Result<AppendResult, AppendError> {
        self.pass().await;
        self.inner
            .append_if(stream, expected, events, condition)
            .await
    }
    async fn read_query(
        &self,
        query: &Query,
        options: ReadQueryOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_query(query, options).await
    }
    async fn read_stream(
        &self,
        stream: &StreamName,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_stream(stream, options).await
    }
    async fn read_all(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_all(options).await
    }
    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError> {
        self.inner.delete_stream(stream, expected).await
    }
    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError> {
        self.inner.tombstone_stream(stream, expected).await
    }
    async fn stream_metadata(
        &self,
        stream: &StreamName,
    ) -> Result<Option<StreamMetadata>, MetadataError> {
        self.inner.stream_metadata(stream).await
    }
    async fn set_stream_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<(), MetadataError> {
        self.inner.set_stream_metadata(stream, metadata).await
    }
    async fn head_position(&self) -> Result<Option<Position>, ReadError> {
        self.inner.head_position().await
    }
    async fn subscribe_to_all(
        &self,
        from: SubscribeFrom,
        filter: EventFilter,
    ) -> Result<EventSubscription, ReadError> {
        self.inner.subscribe_to_all(from, filter).await
    }
    async fn subscribe_to_stream(
        &self,
        stream: &StreamName,
        from: SubscribeStreamFrom,
    ) -> Result<EventSubscription, ReadError> {
        self.inner.subscribe_to_stream(stream, from).await
    }
}

const A: AccountId = AccountId(1);
const B: AccountId = AccountId(2);
const C: AccountId = AccountId(3);

fn request(n: u128, from: AccountId, to: AccountId, amount: u64) -> TransferRequest {
    TransferRequest {
        id: Uuid::from_u128(n),
        from,
        to,
        amount,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_loser_of_a_race_re_decides_and_is_refused() {
    let store = GatedStore::new();
    let handler = AccountHandler::new(store.clone());
    for (account, balance) in [(A, 100), (B, 0)] {
        let id = Uuid::from_u128(u128::from(account.0));
        handler
            .handle(account, &AccountCommand::Open { balance }, id, id)
            .await
            .unwrap();
    }
    store.arm();
    let debit = |n: u128| {
        let handler = handler.clone();
        async move {
            let id = Uuid::from_u128(n);
            let command = AccountCommand::Debit {
                amount: 80,
                transfer: id,
            };
            handler.handle(A, &command, id, id).await
        }
    };
    let (first, second) = tokio::join!(debit(10), debit(11));
    let (won, lost) = if first.is_ok() {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(won.unwrap().len(), 1);
    assert!(
        matches!(
            lost,
            Err(HandleError::Rejected(AccountError::InsufficientFunds {
                balance: 20,
                amount: 80,
                ..
            }))
        ),
        "the loser must re-read the balance of 20 and be refused, got {lost:?}"
    );
    assert_eq!(handler.conflicts(), 1);
    let (state, _) = handler.load(A).await.unwrap();
    assert_eq!(state.balance, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcb_loser_of_a_race_re_decides_and_fails_cleanly() {
    let store = GatedStore::new();
    let bank = DcbBank::new(store.clone());
    bank.open(A, 100).await.unwrap();
    bank.open(B, 0).await.unwrap();
    bank.open(C, 0).await.unwrap();
    store.arm();
    let (to_b, to_c) = (request(10, A, B, 80), request(11, A, C, 80));
    let (first, second) = tokio::join!(bank.transfer(&to_b), bank.transfer(&to_c));
    let mut outcomes = [first.unwrap(), second.unwrap()];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(outcomes, [Outcome::Completed, Outcome::Failed]);
    assert_eq!(bank.conflicts(), 1, "exactly one conditional append lost");
    let expected = Expected {
        opening: [(A, 100), (B, 0), (C, 0)].into(),
        transfers: vec![to_b, to_c],
    };
    let verdict = invariants::check(&*store, Design::Dcb, &expected)
        .await
        .unwrap();
    assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
    assert_eq!(verdict.balances.balances[&A], 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcb_condition_covers_the_target_account_too() {
    // The transfer decides while B is open; B is frozen before the transfer appends.
    // Only B's tag changed, so only a condition over both accounts catches it.
    let store = GatedStore::new();
    let bank = DcbBank::new(store.clone());
    bank.open(A, 100).await.unwrap();
    bank.open(B, 0).await.unwrap();
    store.arm();
    let to_b = request(10, A, B, 30);
    let (moved, frozen) = tokio::join!(bank.transfer(&to_b), bank.freeze(B));
    frozen.unwrap();
    // Either the freeze won the race (the transfer re-decides and fails) or the
    // transfer did (then it completed before the freeze).
    let outcome = moved.unwrap();
    let events = store
        .read_query(&DcbBank::query(&[B]), ReadQueryOptions::new())
        .await
        .unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    match outcome {
        Outcome::Failed => {
            assert_eq!(types, ["Opened", "Frozen"]);
            assert_eq!(bank.conflicts(), 1);
        }
        Outcome::Completed => {
            assert_eq!(types, ["Opened", "Credited", "Frozen"]);
            assert_eq!(bank.conflicts(), 1, "the freeze lost and re-decided");
        }
        Outcome::Compensated => panic!("DCB never compensates"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_replayed_after_a_crash_moves_the_money_once() {
    let store = Arc::new(InMemoryStore::new());
    let handler = AccountHandler::new(store.clone());
    for (account, balance) in [(A, 100), (B, 0)] {
        let id = Uuid::from_u128(u128::from(account.0));
        handler
            .handle(account, &AccountCommand::Open { balance }, id, id)
            .await
            .unwrap();
    }
    let saga = TransferSaga::new(store.clone(), handler.clone());
    let r = request(10, A, B, 30);
    saga.request(r).await.unwrap();
    // A crash after the debit but before the saga recorded it: the debit is stored
    // (with the id the saga derives), `TransferDebited` is not.
    let debit = AccountCommand::Debit {
        amount: 30,
        transfer: r.id,
    };
    handler
        .handle(A, &debit, bank::ids::derive(r.id, "debit"), r.id)
        .await
        .unwrap();
    assert_eq!(saga.react(&r).await.unwrap(), Outcome::Completed);
    let before = store.head_position().await.unwrap();
    // Reacting again (a replay) appends nothing and reports the same outcome.
    assert_eq!(saga.react(&r).await.unwrap(), Outcome::Completed);
    assert_eq!(store.head_position().await.unwrap(), before);

    let expected = Expected {
        opening: [(A, 100), (B, 0)].into(),
        transfers: vec![r],
    };
    let verdict = invariants::check(&*store, Design::Aggregates, &expected)
        .await
        .unwrap();
    assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
    assert_eq!(verdict.balances.balances[&A], 70);
    assert_eq!(verdict.balances.balances[&B], 30);
    let transfer_events = store
        .read_stream(&transfer::stream(r.id), ReadStreamOptions::forwards())
        .await
        .unwrap();
    let types: Vec<&str> = transfer_events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        ["TransferRequested", "TransferDebited", "TransferCompleted"]
    );
    // Correlation and causation ids flow from the transfer into the account events.
    let credited = store
        .read_stream(&B.stream(), ReadStreamOptions::forwards())
        .await
        .unwrap();
    let credit = credited.last().unwrap();
    assert_eq!(credit.metadata.correlation_id(), Some(r.id));
    assert_eq!(
        credit.metadata.causation_id(),
        Some(bank::ids::derive(r.id, "credit"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_compensates_when_the_target_is_frozen() {
    let store = Arc::new(InMemoryStore::new());
    let handler = AccountHandler::new(store.clone());
    for (account, balance) in [(A, 100), (B, 0)] {
        let id = Uuid::from_u128(u128::from(account.0));
        handler
            .handle(account, &AccountCommand::Open { balance }, id, id)
            .await
            .unwrap();
    }
    let freeze = Uuid::from_u128(99);
    handler
        .handle(B, &AccountCommand::Freeze, freeze, freeze)
        .await
        .unwrap();
    let saga = TransferSaga::new(store.clone(), handler.clone());
    let r = request(10, A, B, 30);
    saga.request(r).await.unwrap();
    assert_eq!(saga.react(&r).await.unwrap(), Outcome::Compensated);
    let a = store
        .read_stream(&A.stream(), ReadStreamOptions::forwards())
        .await
        .unwrap();
    let types: Vec<&str> = a.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["Opened", "Debited", "Credited"]);
    let (state, _) = handler.load(A).await.unwrap();
    assert_eq!(state.balance, 100);
}
