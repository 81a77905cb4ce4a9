//! A read model the projection tests share: per-stream event counts and sums, and a
//! row per applied event (so an event applied twice shows as a duplicate row).

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;

use foldstore_core::RecordedEvent;
use foldstore_core::projection::HandlerError;
use foldstore_sqlite::projection::SqliteProjection;
use rusqlite::{Connection, Transaction};

/// Counts and sums `amount` per stream; fails on events of type `Poison`.
pub struct Totals;

impl SqliteProjection for Totals {
    fn setup(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS totals (stream TEXT PRIMARY KEY, n INTEGER NOT NULL, sum INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS applied (event_id TEXT NOT NULL, position TEXT NOT NULL);",
        )
    }

    fn apply(&mut self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), HandlerError> {
        if event.event_type == "Poison" {
            return Err("refusing a poisoned event".into());
        }
        let amount = event.json::<serde_json::Value>()?["amount"]
            .as_i64()
            .unwrap_or(0);
        tx.execute(
            "INSERT INTO totals VALUES (?1, 1, ?2)
             ON CONFLICT (stream) DO UPDATE SET n = n + 1, sum = sum + excluded.sum",
            (event.stream.as_str(), amount),
        )?;
        tx.execute(
            "INSERT INTO applied VALUES (?1, ?2)",
            (event.id.to_string(), event.position.to_string()),
        )?;
        Ok(())
    }

    fn reset(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute_batch("DELETE FROM totals; DELETE FROM applied;")
    }
}

/// The read model's contents: stream -> (count, sum).
pub fn totals(conn: &Connection) -> BTreeMap<String, (i64, i64)> {
    let mut stmt = conn
        .prepare("SELECT stream, n, sum FROM totals ORDER BY stream")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The ids of applied events, with how often each was applied.
pub fn applied(conn: &Connection) -> BTreeMap<String, i64> {
    let mut stmt = conn
        .prepare("SELECT event_id, count(*) FROM applied GROUP BY event_id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// What the read model must hold after applying exactly `events`.
pub fn fold(events: &[RecordedEvent]) -> BTreeMap<String, (i64, i64)> {
    let mut out = BTreeMap::new();
    for e in events {
        let amount = e.json::<serde_json::Value>().unwrap()["amount"]
            .as_i64()
            .unwrap_or(0);
        let entry = out.entry(e.stream.to_string()).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += amount;
    }
    out
}
