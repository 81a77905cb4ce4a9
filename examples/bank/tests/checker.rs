//! The invariant checker catches each kind of broken run. Without these, a checker
//! that found nothing would make every backend's bank test pass.

use bank::Design;
use bank::account::{AccountEvent, AccountId};
use bank::invariants::{self, Expected, Violation};
use bank::transfer::{self, Outcome, TransferEvent, TransferRequest};
use foldstore_core::{DomainEvent, EventStore, ExpectedRevision, InMemoryStore};
use uuid::Uuid;

const A: AccountId = AccountId(1);
const B: AccountId = AccountId(2);

async fn write(store: &InMemoryStore, account: AccountId, events: &[AccountEvent]) {
    let new = events.iter().map(|e| e.to_new_event().unwrap()).collect();
    store
        .append(&account.stream(), ExpectedRevision::Any, new)
        .await
        .unwrap();
}

async fn outcome(store: &InMemoryStore, event: TransferEvent) {
    store
        .append(
            &transfer::stream(event.id()),
            ExpectedRevision::Any,
            vec![event.to_new_event().unwrap()],
        )
        .await
        .unwrap();
}

fn opened(account: AccountId, balance: u64) -> AccountEvent {
    AccountEvent::Opened { account, balance }
}

fn request(amount: u64) -> TransferRequest {
    TransferRequest {
        id: Uuid::from_u128(5),
        from: A,
        to: B,
        amount,
    }
}

async fn violations(store: &InMemoryStore, transfers: Vec<TransferRequest>) -> Vec<Violation> {
    let expected = Expected {
        opening: [(A, 10), (B, 0)].into(),
        transfers,
    };
    invariants::check(store, Design::Aggregates, &expected)
        .await
        .unwrap()
        .violations
}

#[tokio::test]
async fn a_correct_transfer_passes() {
    let store = InMemoryStore::new();
    let r = request(10);
    write(&store, A, &[opened(A, 10)]).await;
    write(&store, B, &[opened(B, 0)]).await;
    write(
        &store,
        A,
        &[AccountEvent::Debited {
            account: A,
            amount: 10,
            transfer: r.id,
        }],
    )
    .await;
    let credit = AccountEvent::Credited {
        account: B,
        amount: 10,
        transfer: r.id,
        refund: false,
    };
    write(&store, B, &[credit]).await;
    outcome(&store, TransferEvent::TransferCompleted { id: r.id }).await;
    assert_eq!(violations(&store, vec![r]).await, vec![]);
}

#[tokio::test]
async fn an_overdraft_that_is_repaid_later_is_still_caught() {
    // The final balances are fine; only the prefix check sees the dip below zero.
    let store = InMemoryStore::new();
    let r = request(15);
    write(&store, A, &[opened(A, 10)]).await;
    write(&store, B, &[opened(B, 0)]).await;
    write(
        &store,
        A,
        &[AccountEvent::Debited {
            account: A,
            amount: 15,
            transfer: r.id,
        }],
    )
    .await;
    let refund = AccountEvent::Credited {
        account: A,
        amount: 15,
        transfer: r.id,
        refund: true,
    };
    write(&store, A, &[refund]).await;
    outcome(
        &store,
        TransferEvent::TransferCompensated {
            id: r.id,
            reason: "test".into(),
        },
    )
    .await;
    let found = violations(&store, vec![r]).await;
    assert!(
        found.iter().any(|v| matches!(
            v,
            Violation::NegativeBalance {
                account: A,
                balance: -5,
                history: "$all",
                ..
            }
        )),
        "{found:?}"
    );
    assert!(
        found.iter().any(|v| matches!(
            v,
            Violation::NegativeBalance {
                account: A,
                history: "its own history",
                ..
            }
        )),
        "{found:?}"
    );
    assert_eq!(found.len(), 2, "{found:?}");
}

#[tokio::test]
async fn money_from_nowhere_is_caught() {
    let store = InMemoryStore::new();
    let r = request(10);
    write(&store, A, &[opened(A, 10)]).await;
    write(&store, B, &[opened(B, 0)]).await;
    // A credit without its debit.
    let credit = AccountEvent::Credited {
        account: B,
        amount: 10,
        transfer: r.id,
        refund: false,
    };
    write(&store, B, &[credit]).await;
    outcome(&store, TransferEvent::TransferCompleted { id: r.id }).await;
    let found = violations(&store, vec![r]).await;
    assert!(
        found.contains(&Violation::MoneyNotConserved {
            expected: 10,
            actual: 20
        }),
        "{found:?}"
    );
    assert!(
        found.iter().any(|v| matches!(
            v,
            Violation::MoneyDoesNotMatchOutcome {
                outcome: Outcome::Completed,
                ..
            }
        )),
        "{found:?}"
    );
}

#[tokio::test]
async fn stuck_and_doubly_ended_transfers_are_caught() {
    let store = InMemoryStore::new();
    write(&store, A, &[opened(A, 10)]).await;
    write(&store, B, &[opened(B, 0)]).await;
    let stuck = request(1);
    let twice = TransferRequest {
        id: Uuid::from_u128(6),
        ..request(1)
    };
    outcome(
        &store,
        TransferEvent::TransferFailed {
            id: twice.id,
            reason: "x".into(),
        },
    )
    .await;
    outcome(
        &store,
        TransferEvent::TransferFailed {
            id: twice.id,
            reason: "y".into(),
        },
    )
    .await;
    let found = violations(&store, vec![stuck, twice]).await;
    assert_eq!(
        found,
        vec![
            Violation::Stuck { transfer: stuck.id },
            Violation::SeveralOutcomes {
                transfer: twice.id,
                count: 2
            },
        ]
    );
}

#[tokio::test]
async fn money_moved_before_opening_and_unknown_transfers_are_caught() {
    let store = InMemoryStore::new();
    let stray = Uuid::from_u128(77);
    write(
        &store,
        B,
        &[AccountEvent::Credited {
            account: B,
            amount: 0,
            transfer: stray,
            refund: false,
        }],
    )
    .await;
    write(&store, A, &[opened(A, 10)]).await;
    write(&store, B, &[opened(B, 0)]).await;
    let found = violations(&store, vec![]).await;
    assert!(
        found
            .iter()
            .any(|v| matches!(v, Violation::NotOpen { account: B, .. })),
        "{found:?}"
    );
    assert!(
        found.contains(&Violation::UnknownTransfer { transfer: stray }),
        "{found:?}"
    );
}
