//! Upcasting against a real database: versions 1, 2 and 3 of one event, written by
//! three generations of code into a SQLite file, reopened and read back as version 3,
//! both directly and through the command handler's load.

use std::sync::Arc;

use foldstore_core::decider::Decider;
use foldstore_core::upcast::Upcasters;
use foldstore_core::{
    CommandHandler, DomainEvent, EventStore, ExpectedRevision, Metadata, NewEvent,
    ReadStreamOptions, SCHEMA_VERSION, StreamName,
};
use foldstore_sqlite::{SqliteOptions, SqliteStore};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The event as the current code knows it: renamed and at version 3.
#[derive(Debug, PartialEq, Serialize, Deserialize, DomainEvent)]
enum Ledger {
    #[event(name = "FundsAdded", version = 3)]
    Added { cents: u64, currency: String },
}

fn upcasters() -> Upcasters {
    Upcasters::new()
        // v1 "Deposit" {"amount": whole euros} -> v2 "Deposit" {"cents"}
        .add("Deposit", 1, |v| {
            let euros = v["amount"].as_u64().ok_or("amount is missing")?;
            Ok(json!({ "cents": euros * 100 }))
        })
        // v2 "Deposit" -> v3 "FundsAdded", adding the currency
        .add_rename("Deposit", 2, "FundsAdded", |mut v| {
            v["currency"] = json!("EUR");
            Ok(v)
        })
}

struct Balance;
impl Decider for Balance {
    type Command = ();
    type Event = Ledger;
    type State = u64;
    type Error = ();
    fn initial_state(&self) -> u64 {
        0
    }
    fn decide(&self, _: &(), _: &u64) -> Result<Vec<Ledger>, ()> {
        Ok(vec![])
    }
    fn evolve(&self, total: u64, Ledger::Added { cents, .. }: &Ledger) -> u64 {
        total + cents
    }
}

#[tokio::test]
async fn v1_v2_and_v3_in_a_sqlite_file_read_back_as_v3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let stream = StreamName::new("ledger-1").unwrap();
    let version = |n: u32| Metadata::new().with(SCHEMA_VERSION, n);
    {
        let store = SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap();
        // Three generations of code, each appending what it knew.
        let generations = [
            NewEvent::json("Deposit", &json!({"amount": 2})).unwrap(),
            NewEvent::json("Deposit", &json!({"cents": 150}))
                .unwrap()
                .with_metadata(version(2)),
            Ledger::Added {
                cents: 7,
                currency: "USD".into(),
            }
            .to_new_event()
            .unwrap(),
        ];
        for event in generations {
            store
                .append(&stream, ExpectedRevision::Any, vec![event])
                .await
                .unwrap();
        }
        store.close().await.unwrap();
    }

    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let read = store
        .read_stream(&stream, ReadStreamOptions::forwards())
        .await
        .unwrap();
    let decoded: Vec<Ledger> = read
        .iter()
        .map(|e| upcasters().decode(e).unwrap())
        .collect();
    assert_eq!(
        decoded,
        [
            Ledger::Added {
                cents: 200,
                currency: "EUR".into()
            },
            Ledger::Added {
                cents: 150,
                currency: "EUR".into()
            },
            Ledger::Added {
                cents: 7,
                currency: "USD".into()
            },
        ]
    );
    // The stored rows are untouched: upcasting happens on read only.
    assert_eq!(read[0].event_type, "Deposit");

    let handler = CommandHandler::new(Arc::new(store), Balance).with_upcasters(upcasters());
    let loaded = handler.load(&stream).await.unwrap();
    assert_eq!(loaded.state, 357);
    assert_eq!(loaded.revision, Some(2));
}
