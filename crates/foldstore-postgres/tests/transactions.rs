//! Transactions (docs/semantics.md §13) across store instances, with transactions held
//! open before `COMMIT`.
//!
//! Guards against lost updates and half-written transactions when several processes
//! share one database: four store instances (four connection pools and group-commit
//! writers, standing in for processes) run transfers over shared accounts, each a
//! transaction of two streams with exact expected revisions, named in either order and
//! mixed with plain appends to the same streams; and transactions carrying the same
//! tracking position race from every instance. Every transaction is held open for a
//! random time up to 5 ms before `COMMIT` (`test_commit_delay`), which widens each
//! race. A transaction whose stream-row locks were taken out of name order could
//! deadlock with another instance's (PostgreSQL would break it, and the group commit
//! would run it again); one whose tracking check did not wait for the source's
//! advisory lock would let two writers store one position.

mod common;

use std::sync::Arc;
use std::time::Duration;

use foldstore_core::transaction::AppendTransaction;
use foldstore_core::{
    AppendError, EventStore, ExpectedRevision, NewEvent, Position, ReadAllOptions,
    ReadStreamOptions, StreamName,
};
use foldstore_postgres::PostgresStore;
use tokio::sync::Barrier;

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

fn amount_of(event: &foldstore_core::RecordedEvent) -> i64 {
    let v: serde_json::Value = event.json().expect("JSON");
    let amount = v["amount"].as_i64().expect("amount");
    match event.event_type.as_str() {
        "Withdrawn" => -amount,
        "Noted" => 0,
        _ => amount,
    }
}

/// 16 tasks over four instances move money between five accounts: each transfer is a
/// transaction of two parts with the revisions the task read, naming the accounts in
/// either order; every third task also appends notes to the accounts on its own. The
/// total never changes, every account's revisions are gapless, each acknowledged
/// transfer is stored once with its two events side by side, no transaction fails
/// with anything but a wrong expected revision, and no group commit had to be run
/// again for a deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_from_four_instances_keep_the_total() {
    const ACCOUNTS: usize = 5;
    const TASKS: usize = 16;
    const TRANSFERS: usize = 5;
    const OPENING: i64 = 1_000;
    let Some(url) = common::test_url("transfers_from_four_instances_keep_the_total") else {
        return;
    };
    let (stores, _guard) = instances(&url).await;
    let accounts: Vec<StreamName> = (0..ACCOUNTS).map(|i| name(&format!("acct-{i}"))).collect();
    for a in &accounts {
        let opened = NewEvent::json("Opened", &serde_json::json!({"amount": OPENING})).unwrap();
        stores[0]
            .append(a, ExpectedRevision::NoStream, vec![opened])
            .await
            .expect("open an account");
    }
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = stores[t % stores.len()].clone();
        let (accounts, barrier) = (accounts.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut done = Vec::new();
            for n in 0..TRANSFERS {
                let (i, j) = ((t + n) % ACCOUNTS, (t + 2 * n + 1) % ACCOUNTS);
                let (i, j) = if i == j {
                    (i, (i + 1) % ACCOUNTS)
                } else {
                    (i, j)
                };
                if t % 3 == 0 {
                    let note = NewEvent::json("Noted", &serde_json::json!({"amount": 0})).unwrap();
                    store
                        .append(&accounts[j], ExpectedRevision::Any, vec![note])
                        .await
                        .expect("a note");
                }
                loop {
                    let read = |s: &StreamName| {
                        let (store, s) = (store.clone(), s.clone());
                        async move {
                            let events = store
                                .read_stream(&s, ReadStreamOptions::forwards())
                                .await
                                .expect("read an account");
                            let balance: i64 = events.iter().map(amount_of).sum();
                            (balance, events.last().expect("opened").revision)
                        }
                    };
                    let (have, from_rev) = read(&accounts[i]).await;
                    let (_, to_rev) = read(&accounts[j]).await;
                    let amount = (1 + (t * 13 + n * 7) % 50) as i64;
                    let amount = amount.min(have);
                    let out = NewEvent::json("Withdrawn", &serde_json::json!({"amount": amount}))
                        .unwrap();
                    let into = NewEvent::json("Deposited", &serde_json::json!({"amount": amount}))
                        .unwrap();
                    let pair = (out.id, into.id);
                    let from = (
                        accounts[i].clone(),
                        ExpectedRevision::Exact(from_rev),
                        vec![out],
                    );
                    let to = (
                        accounts[j].clone(),
                        ExpectedRevision::Exact(to_rev),
                        vec![into],
                    );
                    // Half the transfers name the receiving account first.
                    let (first, second) = if n % 2 == 0 { (from, to) } else { (to, from) };
                    let tx = AppendTransaction::new()
                        .stream(first.0, first.1, first.2)
                        .stream(second.0, second.1, second.2);
                    match store.append_transaction(tx).await {
                        Ok(_) => {
                            done.push(pair);
                            break;
                        }
                        Err(AppendError::WrongExpectedRevision { .. }) => {}
                        Err(e) => panic!("a transfer failed: {e:?}"),
                    }
                }
            }
            done
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("a transfer task"));
    }
    let mut total = 0;
    for a in &accounts {
        let events = stores[1]
            .read_stream(a, ReadStreamOptions::forwards())
            .await
            .expect("read an account");
        let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
        assert_eq!(
            revisions,
            (0..events.len() as u64).collect::<Vec<_>>(),
            "{a}: gapless revisions"
        );
        total += events.iter().map(amount_of).sum::<i64>();
    }
    assert_eq!(total, OPENING * ACCOUNTS as i64, "the total never changes");
    let deadlocks: u64 = stores
        .iter()
        .map(|s| s.group_commit_stats().slow_conflicts)
        .sum();
    assert_eq!(deadlocks, 0, "stream rows are locked in one order");
    let log = stores[2]
        .read_all(ReadAllOptions::forwards())
        .await
        .expect("read $all");
    for (out, into) in acknowledged {
        let at = |id| {
            log.iter()
                .position(|e| e.id == id)
                .expect("an acknowledged transfer is stored")
        };
        assert_eq!(
            at(out).abs_diff(at(into)),
            1,
            "a transfer's events are side by side in $all"
        );
    }
}

/// Rounds of 8 transactions from four instances, all carrying the same tracking
/// position of one source: in each round exactly one is written, and the others are
/// `AlreadyProcessed`, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_from_four_instances_lets_one_writer_per_position_win() {
    let Some(url) =
        common::test_url("tracking_from_four_instances_lets_one_writer_per_position_win")
    else {
        return;
    };
    let (stores, _guard) = instances(&url).await;
    for round in 1..=8u128 {
        let barrier = Arc::new(Barrier::new(8));
        let mut tasks = Vec::new();
        for t in 0..8 {
            let store = stores[t % stores.len()].clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                let event = NewEvent::json("Handled", &t).unwrap();
                let tx = AppendTransaction::new()
                    .stream(
                        name(&format!("handler-{t}")),
                        ExpectedRevision::Any,
                        vec![event],
                    )
                    .tracking("inbox", Position::new(round));
                barrier.wait().await;
                store.append_transaction(tx).await
            }));
        }
        let mut wins = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(_) => wins += 1,
                Err(AppendError::AlreadyProcessed { stored, .. }) => {
                    assert_eq!(stored, Position::new(round), "round {round}");
                }
                Err(e) => panic!("round {round}: {e:?}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one writer");
        for store in &stores {
            assert_eq!(
                store.tracking("inbox").await.expect("tracking"),
                Some(Position::new(round))
            );
        }
    }
    let written = stores[0]
        .read_all(ReadAllOptions::forwards())
        .await
        .expect("read $all");
    assert_eq!(written.len(), 8, "one event per round");
}

/// Waits until a backend running a statement of `schema` waits for a lock.
async fn until_waiting(raw: &tokio_postgres::Client, schema: &str, what: &str) {
    let pattern = format!("%{schema}%");
    for _ in 0..1000 {
        let row = raw
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock' \
                   AND query LIKE $1 AND pid <> pg_backend_pid()",
                &[&pattern],
            )
            .await
            .expect("read pg_stat_activity");
        if row.get::<_, i64>(0) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} never waited for a lock");
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("a raw connection");
    tokio::spawn(connection);
    client
}

/// One group commit holding two transactions of two streams each, (a-0, a-3) and
/// (a-1, a-2): sorted by their first streams, their row locks would be taken in the
/// order a-0, a-3, a-1, a-2. Another transaction (here a raw one) that locks a-1 and
/// then a-3, in name order, would then deadlock with the group commit. The group
/// commit locks every stream row of the batch first, in name order (`lock_streams`),
/// so the raw transaction gets a-3 while the group commit waits for a-1, and nothing
/// deadlocks.
///
/// The batch is made deterministic: a first append waits on a row a raw transaction
/// holds, so the writer is busy while the two transactions queue behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_multi_stream_transactions_locks_rows_in_name_order() {
    let Some(url) =
        common::test_url("a_batch_of_multi_stream_transactions_locks_rows_in_name_order")
    else {
        return;
    };
    let (store, guard) = common::fresh_store_with(&url, |o| o.writers(1)).await;
    let schema = guard.schema.clone();
    for s in ["a-0", "a-1", "a-2", "a-3", "z-9"] {
        store
            .append(
                &name(s),
                ExpectedRevision::NoStream,
                vec![NewEvent::json("Opened", &0).unwrap()],
            )
            .await
            .expect("create a stream");
    }
    let lock_row =
        |s: &str| format!("UPDATE \"{schema}\".streams SET metadata = metadata WHERE name = '{s}'");
    let (holds_z, holds_a, watch) = (raw(&url).await, raw(&url).await, raw(&url).await);
    holds_z.batch_execute("BEGIN").await.unwrap();
    holds_z.batch_execute(&lock_row("z-9")).await.unwrap();
    holds_a.batch_execute("BEGIN").await.unwrap();
    holds_a.batch_execute(&lock_row("a-1")).await.unwrap();

    // The writer takes this one alone and waits for z-9.
    let blocker = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(
                    &name("z-9"),
                    ExpectedRevision::Any,
                    vec![NewEvent::json("X", &1).unwrap()],
                )
                .await
        })
    };
    until_waiting(&watch, &schema, "the first append").await;
    let pair = |a: &str, b: &str| {
        AppendTransaction::new()
            .stream(
                name(a),
                ExpectedRevision::Exact(0),
                vec![NewEvent::json("Moved", &1).unwrap()],
            )
            .stream(
                name(b),
                ExpectedRevision::Exact(0),
                vec![NewEvent::json("Moved", &2).unwrap()],
            )
    };
    let first = store.append_transaction(pair("a-0", "a-3"));
    let second = store.append_transaction(pair("a-1", "a-2"));
    futures::pin_mut!(first, second);
    // One poll each hands both to the (busy) writer's queue: they form its next batch.
    assert!(futures::poll!(&mut first).is_pending());
    assert!(futures::poll!(&mut second).is_pending());
    let script = async {
        holds_z.batch_execute("COMMIT").await.unwrap();
        // The batch of the two transactions waits for a-1...
        until_waiting(&watch, &schema, "the batch of two transactions").await;
        // ...while a transaction locking a-1 and then a-3 takes a-3.
        let took = holds_a.batch_execute(&lock_row("a-3")).await;
        holds_a.batch_execute("COMMIT").await.unwrap();
        took
    };
    let (first, second, took) = tokio::join!(first, second, script);
    took.expect("the raw transaction got a-3 without a deadlock");
    first.expect("the first transaction");
    second.expect("the second transaction");
    blocker.await.unwrap().expect("the first append");
    assert_eq!(store.group_commit_stats().slow_conflicts, 0, "no deadlock");
}
