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
use bank::handler::AggregateBank;
use bank::invariants::{self, Expected};
use bank::saga::{BankBus, TransferSaga};
use bank::transfer::{self, Outcome, TransferCommand, TransferRequest};
use foldstore_core::dcb::ReadQueryOptions;
use foldstore_core::saga::{SagaOptions, SagaRunner};
use foldstore_core::testkit::hooked::{AppendHook, HookedStore};
use foldstore_core::{
    CommandContext, CommandError, EventStore, InMemoryStore, ReadAllOptions, ReadStreamOptions,
    RecordedEvent,
};
use tokio::sync::Barrier;
use uuid::Uuid;

/// The in-memory store whose appends pass a [`Gate`] first.
type GatedStore = HookedStore<InMemoryStore, Gate>;

fn gated_store() -> Arc<GatedStore> {
    Arc::new(HookedStore::new(
        InMemoryStore::new(),
        Gate {
            barrier: Barrier::new(2),
            gated: AtomicUsize::new(2),
        },
    ))
}

/// Once armed, the next two appends (of either kind) wait for each other.
struct Gate {
    barrier: Barrier,
    gated: AtomicUsize,
}

impl Gate {
    fn arm(&self) {
        self.gated.store(0, Ordering::SeqCst);
    }
}

#[async_trait]
impl AppendHook<InMemoryStore> for Gate {
    async fn before_append(&self, _inner: &InMemoryStore) {
        let n = self.gated.fetch_add(1, Ordering::SeqCst);
        if n < 2 {
            self.barrier.wait().await;
        }
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

fn seeded(n: u128) -> CommandContext {
    let id = Uuid::from_u128(n);
    CommandContext::new().correlation_id(id).id_seed(id)
}

async fn open(bank: &AggregateBank, accounts: &[(AccountId, u64)]) {
    for &(account, balance) in accounts {
        let command = AccountCommand::Open { account, balance };
        bank.account(&command, &seeded(1000 + u128::from(account.0)))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_loser_of_a_race_re_decides_and_is_refused() {
    let store = gated_store();
    let bank = AggregateBank::new(store.clone());
    open(&bank, &[(A, 100), (B, 0)]).await;
    store.hook.arm();
    let debit = |n: u128| {
        let bank = bank.clone();
        async move {
            let command = AccountCommand::Debit {
                account: A,
                amount: 80,
                transfer: Uuid::from_u128(n),
            };
            bank.account(&command, &seeded(n)).await
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
            Err(CommandError::Rejected(AccountError::InsufficientFunds {
                balance: 20,
                amount: 80,
                ..
            }))
        ),
        "the loser must re-read the balance of 20 and be refused, got {lost:?}"
    );
    assert_eq!(
        bank.conflicts(),
        0,
        "a refusal after a retry counts no outcome"
    );
    assert_eq!(bank.load_account(A).await.unwrap().balance, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcb_loser_of_a_race_re_decides_and_fails_cleanly() {
    let store = gated_store();
    let bank = DcbBank::new(store.clone());
    bank.open(A, 100).await.unwrap();
    bank.open(B, 0).await.unwrap();
    bank.open(C, 0).await.unwrap();
    store.hook.arm();
    let (to_b, to_c) = (request(10, A, B, 80), request(11, A, C, 80));
    let (first, second) = tokio::join!(bank.transfer(&to_b), bank.transfer(&to_c));
    let mut outcomes = [first.unwrap(), second.unwrap()];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(outcomes, [Outcome::Completed, Outcome::Failed]);
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
    let store = gated_store();
    let bank = DcbBank::new(store.clone());
    bank.open(A, 100).await.unwrap();
    bank.open(B, 0).await.unwrap();
    store.hook.arm();
    let to_b = request(10, A, B, 30);
    let (moved, frozen) = tokio::join!(bank.transfer(&to_b), bank.freeze(B));
    frozen.unwrap();
    // Either the freeze won the race (the transfer re-decides and fails) or the
    // transfer did (then it completed before the freeze, which re-decided).
    let outcome = moved.unwrap();
    let events = store
        .read_query(&DcbBank::query(&[B]), ReadQueryOptions::new())
        .await
        .unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    match outcome {
        Outcome::Failed => assert_eq!(types, ["Opened", "Frozen"]),
        Outcome::Completed => {
            assert_eq!(types, ["Opened", "Credited", "Frozen"]);
            assert_eq!(bank.conflicts(), 1, "the freeze lost and re-decided");
        }
        Outcome::Compensated => panic!("DCB never compensates"),
    }
}

/// Runs the transfer saga over what is stored until `transfer` has ended.
async fn run_saga(
    store: Arc<dyn EventStore>,
    bank: &AggregateBank,
    from_start: bool,
    transfer: Uuid,
) {
    let options = SagaOptions {
        from_start,
        ..SagaOptions::default()
    };
    let mut runner = SagaRunner::new(store.clone(), TransferSaga::new(), BankBus(bank.clone()))
        .unwrap()
        .options(options);
    for _ in 0..5 {
        runner.catch_up().await.unwrap();
        let events = store
            .read_stream(&transfer::stream(transfer), ReadStreamOptions::forwards())
            .await
            .unwrap();
        if events
            .iter()
            .any(|e| transfer::OUTCOME_TYPES.contains(&e.event_type.as_str()))
        {
            return;
        }
    }
    panic!("the saga did not finish transfer {transfer}");
}

/// The events of the account and transfer streams (the saga's own bookkeeping left out).
async fn domain_events(store: &dyn EventStore) -> Vec<RecordedEvent> {
    store
        .read_all(ReadAllOptions::forwards())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.stream.as_str().starts_with("account-") || e.stream.as_str().starts_with("transfer-")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_replayed_from_the_start_moves_the_money_once() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let bank = AggregateBank::new(store.clone());
    open(&bank, &[(A, 100), (B, 0)]).await;
    let r = request(10, A, B, 30);
    bank.transfer(&TransferCommand::Request(r), &seeded(10))
        .await
        .unwrap();
    run_saga(store.clone(), &bank, false, r.id).await;
    let before = domain_events(&*store).await;
    // A restart that lost the saga's position replays every event: every command is
    // dispatched again with the same ids, and nothing new is written.
    run_saga(store.clone(), &bank, true, r.id).await;
    assert_eq!(domain_events(&*store).await, before);

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
    // The correlation id flows from the request into the account events; the
    // causation id is the event the saga reacted to.
    let credited = store
        .read_stream(&B.stream(), ReadStreamOptions::forwards())
        .await
        .unwrap();
    let credit = credited.last().unwrap();
    assert_eq!(credit.metadata.correlation_id(), Some(r.id));
    assert_eq!(credit.metadata.causation_id(), Some(transfer_events[1].id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_compensates_when_the_target_is_frozen() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let bank = AggregateBank::new(store.clone());
    open(&bank, &[(A, 100), (B, 0)]).await;
    bank.account(&AccountCommand::Freeze { account: B }, &seeded(99))
        .await
        .unwrap();
    let r = request(10, A, B, 30);
    bank.transfer(&TransferCommand::Request(r), &seeded(10))
        .await
        .unwrap();
    run_saga(store.clone(), &bank, false, r.id).await;
    let a = store
        .read_stream(&A.stream(), ReadStreamOptions::forwards())
        .await
        .unwrap();
    let types: Vec<&str> = a.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["Opened", "Debited", "Credited"]);
    assert_eq!(bank.load_account(A).await.unwrap().balance, 100);
    let transfer_events = store
        .read_stream(&transfer::stream(r.id), ReadStreamOptions::forwards())
        .await
        .unwrap();
    let last = transfer_events.last().unwrap();
    assert_eq!(last.event_type, "TransferCompensated");
    assert!(
        last.data.windows(6).any(|w| w == b"frozen"),
        "the reason is recorded"
    );
}
