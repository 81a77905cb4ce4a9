//! §11 Snapshots: `SnapshotStore` on every backend.

use std::time::Duration;

use super::{TestStore, name};
use crate::StreamName;
use crate::snapshot::{Snapshot, SnapshotError};

async fn save<S: TestStore>(store: &S, snapshot: Snapshot) {
    let what = format!(
        "{} {} r{}",
        snapshot.stream, snapshot.state_type, snapshot.revision
    );
    if let Err(e) = store.save_snapshot(snapshot).await {
        panic!("save_snapshot({what}) should succeed, got {e:?}");
    }
}

async fn load<S: TestStore>(store: &S, stream: &StreamName, state_type: &str) -> Option<Snapshot> {
    match store.load_snapshot(stream, state_type).await {
        Ok(s) => s,
        Err(e) => panic!("load_snapshot({stream}, {state_type}) should succeed, got {e:?}"),
    }
}

fn snap(
    stream: &str,
    state_type: &str,
    schema_version: u32,
    revision: u64,
    data: &str,
) -> Snapshot {
    Snapshot::new(
        name(stream),
        state_type,
        schema_version,
        revision,
        data.as_bytes().to_vec(),
    )
}

/// §11: a stream without a snapshot loads `None`.
pub async fn snapshot_missing_loads_none<S: TestStore>(store: S) {
    let rule = "§11 no snapshot loads None";
    assert!(
        load(&store, &name("acct-1"), "Balance").await.is_none(),
        "{rule}"
    );
}

/// §11: a saved snapshot loads back whole: stream, state type, schema version, revision,
/// data byte for byte, and its time (to the microsecond).
pub async fn snapshot_save_then_load_round_trips<S: TestStore>(store: S) {
    let rule = "§11 a snapshot round-trips";
    let mut data = br#"{"cents":500}"#.to_vec();
    data.extend_from_slice(&[0, 255, 10]);
    let saved = Snapshot::new(name("acct-1"), "Balance", 3, 41, data);
    save(&store, saved.clone()).await;
    let got = load(&store, &name("acct-1"), "Balance")
        .await
        .unwrap_or_else(|| panic!("{rule}: the snapshot is stored"));
    assert_eq!(got.stream, saved.stream, "{rule}");
    assert_eq!(got.state_type, "Balance", "{rule}");
    assert_eq!(got.schema_version, 3, "{rule}");
    assert_eq!(got.revision, 41, "{rule}");
    assert_eq!(got.data, saved.data, "{rule}: data byte for byte");
    let drift = (got.recorded_at - saved.recorded_at).abs();
    assert!(
        drift.to_std().unwrap_or(Duration::MAX) < Duration::from_millis(1),
        "{rule}: recorded_at kept, drift {drift}"
    );
}

/// §11: a save replaces a snapshot at the same or an earlier revision, and never one at
/// a later revision of the same schema version (a slow writer never wins).
pub async fn snapshot_older_revision_never_replaces_a_newer_one<S: TestStore>(store: S) {
    let rule = "§11 a snapshot is replaced only by the same or a later revision";
    let s = name("acct-1");
    save(&store, snap("acct-1", "Balance", 1, 10, "ten")).await;
    save(&store, snap("acct-1", "Balance", 1, 20, "twenty")).await;
    assert_eq!(
        load(&store, &s, "Balance").await.map(|x| x.revision),
        Some(20),
        "{rule}"
    );
    save(&store, snap("acct-1", "Balance", 1, 15, "fifteen")).await;
    let got = load(&store, &s, "Balance").await.expect("stored");
    assert_eq!(
        (got.revision, &got.data[..]),
        (20, &b"twenty"[..]),
        "{rule}: kept"
    );
    save(&store, snap("acct-1", "Balance", 1, 20, "twenty again")).await;
    let got = load(&store, &s, "Balance").await.expect("stored");
    assert_eq!(
        &got.data[..],
        b"twenty again",
        "{rule}: the same revision replaces"
    );
}

/// §11: a snapshot of another schema version always replaces the stored one, even at
/// an earlier revision (the stored encoding is obsolete), and the version is kept.
pub async fn snapshot_of_another_schema_version_replaces<S: TestStore>(store: S) {
    let rule = "§11 a new schema version replaces the snapshot";
    let s = name("acct-1");
    save(&store, snap("acct-1", "Balance", 1, 50, "v1")).await;
    save(&store, snap("acct-1", "Balance", 2, 3, "v2")).await;
    let got = load(&store, &s, "Balance").await.expect("stored");
    assert_eq!(
        (got.schema_version, got.revision, &got.data[..]),
        (2, 3, &b"v2"[..]),
        "{rule}"
    );
}

/// §11: snapshots are kept per stream and per state type.
pub async fn snapshot_streams_and_state_types_are_separate<S: TestStore>(store: S) {
    let rule = "§11 snapshots are per stream and state type";
    save(&store, snap("acct-1", "Balance", 1, 1, "a1-balance")).await;
    save(&store, snap("acct-1", "History", 1, 2, "a1-history")).await;
    save(&store, snap("acct-2", "Balance", 1, 3, "a2-balance")).await;
    let data = |s: Option<Snapshot>| s.map(|s| String::from_utf8_lossy(&s.data).into_owned());
    assert_eq!(
        data(load(&store, &name("acct-1"), "Balance").await).as_deref(),
        Some("a1-balance"),
        "{rule}"
    );
    assert_eq!(
        data(load(&store, &name("acct-1"), "History").await).as_deref(),
        Some("a1-history"),
        "{rule}"
    );
    assert_eq!(
        data(load(&store, &name("acct-2"), "Balance").await).as_deref(),
        Some("a2-balance"),
        "{rule}"
    );
    assert!(
        load(&store, &name("acct-2"), "History").await.is_none(),
        "{rule}"
    );
    assert!(
        load(&store, &name("acct-10"), "Balance").await.is_none(),
        "{rule}"
    );
}

/// §11: an empty or over-long state type is refused with `InvalidStateType`.
pub async fn snapshot_invalid_state_type_is_refused<S: TestStore>(store: S) {
    let rule = "§11 a state type is non-empty and at most 200 bytes";
    let long = "s".repeat(201);
    for bad in ["", long.as_str()] {
        match store.save_snapshot(snap("acct-1", bad, 1, 1, "x")).await {
            Err(SnapshotError::InvalidStateType(_)) => {}
            other => panic!("{rule}: saving with state type {bad:?} got {other:?}"),
        }
        match store.load_snapshot(&name("acct-1"), bad).await {
            Err(SnapshotError::InvalidStateType(_)) => {}
            other => panic!("{rule}: loading with state type {bad:?} got {other:?}"),
        }
    }
    let ok = "s".repeat(200);
    save(&store, snap("acct-1", &ok, 1, 1, "x")).await;
    assert!(load(&store, &name("acct-1"), &ok).await.is_some(), "{rule}");
}
