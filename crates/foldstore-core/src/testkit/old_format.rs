//! One scenario written into every checked-in old-format fixture (SQLite files,
//! PostgreSQL dumps), and the checks each fixture must pass when a newer build opens it
//! (guarantee G9): exact read-back, soft delete and tombstone kept, metadata kept, an old
//! append retried is recognised, and new appends continue after the stored ones.
//!
//! Never change what [`write_scenario`] writes: the fixtures were made with it.

use uuid::Uuid;

use crate::{
    AppendError, EventStore, ExpectedRevision, JSON, Metadata, NewEvent, ReadAllOptions, ReadError,
    ReadStreamOptions, StreamMetadata, StreamName,
};

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("fixture stream names are valid")
}

/// The id of the scenario's `n`-th event (1-based).
pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n)
}

fn correlation() -> Uuid {
    Uuid::from_u128(0xc0c0)
}

fn metadata() -> StreamMetadata {
    let mut custom = serde_json::Map::new();
    custom.insert("owner".into(), "ada".into());
    StreamMetadata {
        max_count: Some(2),
        custom,
        ..StreamMetadata::default()
    }
}

fn json(event_type: &str, data: serde_json::Value) -> NewEvent {
    NewEvent::json(event_type, &data).expect("fixture data is JSON")
}

/// Writes the scenario: 7 events in 3 streams, a soft delete, a tombstone and stream
/// metadata.
pub async fn write_scenario(store: &impl EventStore) {
    let account = name("account-1");
    let events = (1..=3)
        .map(|n| {
            json("Deposited", serde_json::json!({ "amount": n }))
                .with_id(id(n))
                .with_metadata(Metadata::new().with_correlation_id(correlation()))
        })
        .collect();
    store
        .append(&account, ExpectedRevision::NoStream, events)
        .await
        .expect("append account-1");
    let order = name("order-7");
    let placed = json("Placed", serde_json::json!({})).with_id(id(4));
    let note = NewEvent::raw("Note", "plain text", "text/plain").with_id(id(5));
    store
        .append(&order, ExpectedRevision::NoStream, vec![placed, note])
        .await
        .expect("append order-7");
    store
        .delete_stream(&order, ExpectedRevision::Exact(1))
        .await
        .expect("delete order-7");
    let again = json("Placed", serde_json::json!({"again": true})).with_id(id(6));
    store
        .append(&order, ExpectedRevision::NoStream, vec![again])
        .await
        .expect("append order-7 again");
    let gone = name("gone-1");
    let born = json("Born", serde_json::json!(1)).with_id(id(7));
    store
        .append(&gone, ExpectedRevision::Any, vec![born])
        .await
        .expect("append gone-1");
    store
        .tombstone_stream(&gone, ExpectedRevision::Any)
        .await
        .expect("tombstone gone-1");
    store
        .set_stream_metadata(&account, metadata())
        .await
        .expect("set metadata");
}

/// Checks a store opened on a fixture written by [`write_scenario`] (and, in newer
/// fixtures, more events after it); panics naming what was lost or changed.
pub async fn check_scenario(store: &impl EventStore) {
    let all = store
        .read_all(ReadAllOptions::forwards())
        .await
        .expect("read $all");
    let ids: Vec<Uuid> = all.iter().map(|e| e.id).take(7).collect();
    assert_eq!(
        ids,
        (1..=7).map(id).collect::<Vec<_>>(),
        "every event of the scenario, in order, first"
    );
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let first: serde_json::Value = all[0].json().expect("JSON data");
    assert_eq!(first["amount"], 1);
    assert_eq!(all[0].metadata.correlation_id(), Some(correlation()));
    assert_eq!(all[0].content_type, JSON);
    assert_eq!(all[4].content_type, "text/plain");
    assert_eq!(&all[4].data[..], b"plain text");
    assert!(all[0].recorded_at.timestamp() > 1_700_000_000);

    // Metadata (max_count 2) hides the first account event.
    let account = store
        .read_stream(&name("account-1"), ReadStreamOptions::forwards())
        .await
        .expect("read account-1");
    let revisions: Vec<u64> = account.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, [1, 2], "stream metadata still applies");
    assert_eq!(
        store
            .stream_metadata(&name("account-1"))
            .await
            .expect("metadata"),
        Some(metadata())
    );
    // The soft delete held: only the event written after it, at revision 2.
    let order = store
        .read_stream(&name("order-7"), ReadStreamOptions::forwards())
        .await
        .expect("read order-7");
    assert_eq!(order.len(), 1, "the soft delete still hides the old events");
    assert_eq!(order[0].revision, 2);
    // The tombstone held.
    let gone = store
        .read_stream(&name("gone-1"), ReadStreamOptions::forwards())
        .await;
    assert!(matches!(gone, Err(ReadError::StreamTombstoned { .. })));
    let late = store
        .append(
            &name("gone-1"),
            ExpectedRevision::Any,
            vec![json("X", serde_json::json!(1))],
        )
        .await;
    assert!(matches!(late, Err(AppendError::StreamTombstoned { .. })));
    // An old append retried is recognised; new appends continue where the log ended.
    let again = json("Placed", serde_json::json!({"again": true})).with_id(id(6));
    let retry = store
        .append(&name("order-7"), ExpectedRevision::Exact(1), vec![again])
        .await
        .expect("retry of a stored append");
    assert_eq!(retry.position, all[5].position, "the retry wrote nothing");
    let next = store
        .append(
            &name("account-1"),
            ExpectedRevision::Exact(2),
            vec![json("Deposited", serde_json::json!(4))],
        )
        .await
        .expect("a new append");
    assert_eq!(next.next_expected_revision, 3);
    assert!(
        all.last().is_some_and(|last| next.position > last.position),
        "new events sort after old ones"
    );
}
