//! Domain events: names, versions, tags, unknown types, upcasting on read.

use std::sync::Arc;

use foldstore_core::upcast::Upcasters;
use foldstore_core::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::bank::*;

#[test]
fn derive_encodes_type_version_tags_and_content_only() {
    let e = deposited("a-1", 5).to_new_event().unwrap();
    assert_eq!(e.event_type, "Deposited");
    assert_eq!(e.metadata.get(SCHEMA_VERSION).unwrap(), 1);
    assert_eq!(e.tags, ["account:a-1"]);
    let data: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
    assert_eq!(data, json!({"account": "a-1", "cents": 5}));
    assert_eq!(
        AccountEvent::event_types(),
        &[("Opened", 1), ("Deposited", 1), ("Withdrawn", 1)]
    );
}

#[derive(Debug, PartialEq, Serialize, Deserialize, DomainEvent)]
enum Mixed {
    Unit,
    Pair(u8, #[event(tag = "k")] String),
    #[event(name = "shipping.Shipped", version = 4)]
    Shipped {
        parcel: u32,
    },
}

#[test]
fn unit_tuple_and_renamed_variants_round_trip() {
    for value in [
        Mixed::Unit,
        Mixed::Pair(1, "x".into()),
        Mixed::Shipped { parcel: 9 },
    ] {
        let new = value.to_new_event().unwrap();
        assert_eq!(
            Mixed::decode_data(&new.event_type, &new.data).unwrap(),
            value
        );
    }
    assert_eq!(&Mixed::Unit.encode_data().unwrap(), b"null");
    assert_eq!(Mixed::Pair(1, "x".into()).tags(), ["k:x"]);
    assert_eq!(
        Mixed::Shipped { parcel: 1 }.event_type(),
        "shipping.Shipped"
    );
    assert_eq!(Mixed::current_version("shipping.Shipped"), Some(4));
}

#[tokio::test]
async fn unknown_types_are_a_typed_error_or_skipped() {
    let store = Arc::new(InMemoryStore::new());
    let stream = StreamName::new("account-1").unwrap();
    let events = vec![
        opened("1").to_new_event().unwrap(),
        NewEvent::json("Audited", &json!({})).unwrap(),
        deposited("1", 4).to_new_event().unwrap(),
    ];
    store
        .append(&stream, ExpectedRevision::NoStream, events)
        .await
        .unwrap();
    let strict = CommandHandler::new(store.clone(), Bank);
    match strict.load(&stream).await {
        Err(CommandError::Decode(e)) => {
            assert!(e.is_unknown_type());
            assert!(e.to_string().contains("\"Audited\""), "{e}");
        }
        other => panic!("expected an unknown type error, got {other:?}"),
    }
    let lenient = CommandHandler::new(store, Bank).skip_unknown_types(true);
    let loaded = lenient.load(&stream).await.unwrap();
    assert_eq!(loaded.state.balance, 4);
    assert_eq!(loaded.revision, Some(2));
}

/// The event as three generations of code wrote it.
#[derive(Debug, PartialEq, Serialize, Deserialize, DomainEvent)]
pub(crate) enum Ledger {
    #[event(name = "FundsAdded", version = 3)]
    Added { cents: u64, currency: String },
}

pub(crate) fn ledger_upcasters() -> Upcasters {
    Upcasters::new()
        // v1 "Deposit" {"amount": euros} -> v2 "Deposit" {"cents"}
        .add("Deposit", 1, |v| {
            let euros = v["amount"].as_u64().ok_or("amount is missing")?;
            Ok(json!({ "cents": euros * 100 }))
        })
        // v2 "Deposit" -> v3 "FundsAdded" with a currency
        .add_rename("Deposit", 2, "FundsAdded", |mut v| {
            v["currency"] = json!("EUR");
            Ok(v)
        })
}

pub(crate) fn stored_generations() -> Vec<NewEvent> {
    let v = |n: u32| Metadata::new().with(SCHEMA_VERSION, n);
    vec![
        // v1 had no schema_version key: absent means 1.
        NewEvent::json("Deposit", &json!({"amount": 2})).unwrap(),
        NewEvent::json("Deposit", &json!({"cents": 150}))
            .unwrap()
            .with_metadata(v(2)),
        NewEvent::json("FundsAdded", &json!({"cents": 7, "currency": "USD"}))
            .unwrap()
            .with_metadata(v(3)),
    ]
}

pub(crate) fn expected_generations() -> Vec<Ledger> {
    vec![
        Ledger::Added {
            cents: 200,
            currency: "EUR".into(),
        },
        Ledger::Added {
            cents: 150,
            currency: "EUR".into(),
        },
        Ledger::Added {
            cents: 7,
            currency: "USD".into(),
        },
    ]
}

#[tokio::test]
async fn v1_v2_and_v3_read_back_as_v3() {
    let store = InMemoryStore::new();
    let stream = StreamName::new("ledger-1").unwrap();
    store
        .append(&stream, ExpectedRevision::NoStream, stored_generations())
        .await
        .unwrap();
    let read = store
        .read_stream(&stream, ReadStreamOptions::forwards())
        .await
        .unwrap();
    let up = ledger_upcasters();
    let decoded: Vec<Ledger> = read.iter().map(|e| up.decode(e).unwrap()).collect();
    assert_eq!(decoded, expected_generations());

    // Without the upcasters, the old versions are refused, not misread.
    let err = Ledger::from_recorded(&read[0]).unwrap_err();
    assert!(err.is_unknown_type(), "{err}");
    let err = Upcasters::new()
        .add("Deposit", 1, |v| Ok(json!({ "cents": v["amount"] })))
        .decode::<Ledger>(&read[0])
        .unwrap_err();
    assert!(
        err.is_unknown_type(),
        "v2 'Deposit' is still unknown: {err}"
    );
    let newer = NewEvent::json("FundsAdded", &json!({"cents": 1, "currency": "EUR"}))
        .unwrap()
        .with_metadata(Metadata::new().with(SCHEMA_VERSION, 4));
    store
        .append(&stream, ExpectedRevision::Any, vec![newer])
        .await
        .unwrap();
    let last = store
        .read_stream(&stream, ReadStreamOptions::backwards().max_count(1))
        .await
        .unwrap();
    assert!(matches!(
        up.decode::<Ledger>(&last[0]),
        Err(DecodeError::VersionMismatch {
            stored: 4,
            current: 3,
            ..
        })
    ));
}
