//! Conditional appends (docs/semantics.md §10.4) across store instances, with
//! transactions held open before `COMMIT`.
//!
//! Guards against lost updates under READ COMMITTED: two conditional appends in
//! different transactions (here: four store instances, so four connection pools and
//! group-commit writers, standing in for processes) could each check their condition,
//! see nothing, and both commit. The advisory-lock scheme of
//! `sql/0002_dcb_and_snapshots.sql` must make the second one see the first. Every
//! transaction is held open for a random time up to 5 ms before `COMMIT`
//! (`test_commit_delay`), which widens each race; with the locks removed these tests
//! fail.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use foldstore_core::dcb::{AppendCondition, Query, QueryItem, ReadQueryOptions};
use foldstore_core::{AppendError, EventStore, ExpectedRevision, NewEvent, StreamName};
use foldstore_postgres::PostgresStore;
use tokio::sync::Barrier;
use uuid::Uuid;

async fn instances(url: &str) -> (Vec<PostgresStore>, common::SchemaGuard) {
    let delayed = |o: foldstore_postgres::PostgresOptions| {
        let mut o = o;
        o.test_commit_delay = Some(Duration::from_millis(5));
        o
    };
    let (first, guard) = common::fresh_store_with(url, delayed).await;
    let mut stores = vec![first];
    for _ in 0..3 {
        stores.push(
            PostgresStore::connect(delayed(common::options(url, &guard.schema)))
                .await
                .expect("another instance"),
        );
    }
    (stores, guard)
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("name")
}

/// Uniqueness claims (`after: None`) racing from four instances: in each round exactly
/// one wins. Items use tags in one round kind and types only in the other, so both
/// lock kinds are exercised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uniqueness_claims_from_four_instances_let_exactly_one_win() {
    let Some(url) = common::test_url("uniqueness_claims_from_four_instances_let_exactly_one_win")
    else {
        return;
    };
    let (stores, _guard) = instances(&url).await;
    for round in 0..12 {
        let by_type = round % 2 == 1;
        let (event_type, tag) = (format!("Claimed{round}"), format!("user:{round}"));
        let item = if by_type {
            QueryItem::new().types([event_type.clone()])
        } else {
            QueryItem::new().tags([tag.clone()])
        };
        let query = Query::from_items([item]);
        let barrier = Arc::new(Barrier::new(8));
        let mut tasks = Vec::new();
        for t in 0..8 {
            let store = stores[t % stores.len()].clone();
            let (barrier, query) = (barrier.clone(), query.clone());
            let event = NewEvent::json(&event_type, &t)
                .unwrap()
                .with_tags([tag.clone()]);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store
                    .append_if(
                        &name(&format!("signup-{t}")),
                        ExpectedRevision::Any,
                        vec![event],
                        AppendCondition::new(query, None),
                    )
                    .await
            }));
        }
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => wins += 1,
                Err(AppendError::ConditionFailed { .. }) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(
            wins, 1,
            "round {round} (by type: {by_type}): exactly one claim wins"
        );
    }
}

/// Sixteen tasks over four instances claim seats from a pool of 30 with
/// read_query → decide → append_if, while eight more append unrelated tagged events:
/// no more than 30 seats are claimed and every acknowledged claim is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_claims_from_four_instances_never_exceed_the_pool() {
    const SEATS: usize = 30;
    let Some(url) = common::test_url("seat_claims_from_four_instances_never_exceed_the_pool")
    else {
        return;
    };
    let (stores, _guard) = instances(&url).await;
    let query = Query::from_items([QueryItem::new().types(["SeatClaimed"]).tags(["course:c1"])]);
    let barrier = Arc::new(Barrier::new(24));
    let mut claimers = Vec::new();
    for t in 0..16 {
        let store = stores[t % stores.len()].clone();
        let (barrier, query) = (barrier.clone(), query.clone());
        claimers.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut claimed: Vec<Uuid> = Vec::new();
            for n in 0.. {
                let seen = store
                    .read_query(&query, ReadQueryOptions::new())
                    .await
                    .unwrap();
                if seen.len() >= SEATS {
                    break;
                }
                let claim = NewEvent::json("SeatClaimed", &n)
                    .unwrap()
                    .with_tags(["course:c1".to_owned(), format!("student:{t}-{n}")]);
                let id = claim.id;
                match store
                    .append_if(
                        &name(&format!("enrolment-{t}")),
                        ExpectedRevision::Any,
                        vec![claim],
                        AppendCondition::new(query.clone(), seen.last().map(|e| e.position)),
                    )
                    .await
                {
                    Ok(_) => claimed.push(id),
                    Err(AppendError::ConditionFailed { .. }) => {}
                    Err(e) => panic!("claimer {t}: {e}"),
                }
            }
            claimed
        }));
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut others = Vec::new();
    for t in 0..8 {
        let store = stores[t % stores.len()].clone();
        let (barrier, done) = (barrier.clone(), done.clone());
        others.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut n = 0u64;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let e = NewEvent::json("Noted", &n)
                    .unwrap()
                    .with_tags([format!("note:{t}"), "course:c2".to_owned()]);
                store
                    .append(&name(&format!("notes-{t}")), ExpectedRevision::Any, vec![e])
                    .await
                    .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut claimed = Vec::new();
    for task in claimers {
        claimed.extend(task.await.unwrap());
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let mut noted = 0;
    for task in others {
        noted += task.await.unwrap();
    }
    assert!(noted > 0, "the unrelated writers ran");
    assert_eq!(claimed.len(), SEATS, "exactly the pool was claimed");
    let stored = stores[0]
        .read_query(&query, ReadQueryOptions::new())
        .await
        .unwrap();
    let stored: Vec<Uuid> = stored.iter().map(|e| e.id).collect();
    let unique: HashSet<Uuid> = stored.iter().copied().collect();
    assert_eq!(unique.len(), stored.len(), "no claim is stored twice");
    assert_eq!(
        unique,
        claimed.into_iter().collect::<HashSet<_>>(),
        "the stored claims are exactly the acknowledged ones"
    );
}

/// Snapshots are rows in the schema: another instance (another process) loads what
/// one saved, and a reconnect keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_shared_by_instances_and_survive_reconnects() {
    use foldstore_core::{Snapshot, SnapshotStore};
    let Some(url) = common::test_url("snapshots_are_shared_by_instances_and_survive_reconnects")
    else {
        return;
    };
    let (a, guard) = common::fresh_store(&url).await;
    a.save_snapshot(Snapshot::new(
        name("acct-1"),
        "Balance",
        7,
        12,
        b"{\"c\":1}".to_vec(),
    ))
    .await
    .unwrap();
    drop(a);
    let b = PostgresStore::connect(common::options(&url, &guard.schema))
        .await
        .unwrap();
    let got = b
        .load_snapshot(&name("acct-1"), "Balance")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.schema_version, got.revision, &got.data[..]),
        (7, 12, &b"{\"c\":1}"[..])
    );
}
