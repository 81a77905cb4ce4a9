//! Baselines that take turns with the store, so that both see the same disk.
//!
//! This machine's fsync rate moves by a factor of two or more within seconds. A
//! baseline measured for 1.5 s before or after the store's run can land in another
//! phase than the run itself, and for `append-1 --concurrency 1`, whose target is a
//! ratio of 0.8 to a raw baseline, that noise was as large as the margin. So on SQLite
//! that workload alternates: the store appends for [`TURN`], then plain rusqlite
//! inserts one row per durable transaction for [`TURN`] (the unindexed table and the
//! store's own schema in turn), and so on until the store's events are in. Each side's
//! rate counts only its own turns.
//!
//! The turns hand over through a read-write lock: every append holds a read guard, and
//! a baseline's turn holds the write guard, so a turn starts only once the append in
//! flight has been answered, and no append starts during a turn.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::RwLock;
use tokio::task::JoinHandle;

use super::baseline::{remove_database, stopped};
use super::raw_sqlite::{RawTable, make_store_schema};
use crate::error::CliError;

/// How long each side appends or inserts before handing over.
pub(crate) const TURN: Duration = Duration::from_millis(250);

/// The gate the store's appends pass through: a read guard per append.
pub(crate) type Gate = Arc<RwLock<()>>;

/// Baselines running in turns with the store, on a blocking thread.
pub(crate) struct Turns {
    gate: Gate,
    done: Arc<AtomicBool>,
    thread: JoinHandle<Result<Taken, CliError>>,
}

/// What the baselines measured in their turns.
#[derive(Debug)]
pub(crate) struct Taken {
    /// Rows per second into the table without secondary indexes, one per transaction.
    pub(crate) raw_tx1_per_sec: f64,
    /// Rows per second into the store's own schema, one per transaction.
    pub(crate) raw_schema_tx1_per_sec: f64,
    /// When each baseline turn held the gate.
    pub(crate) turns: Vec<(Instant, Instant)>,
}

impl Taken {
    /// How long the turns held the store back within `from..to`.
    pub(crate) fn paused_within(&self, from: Instant, to: Instant) -> Duration {
        self.turns
            .iter()
            .map(|&(start, end)| end.min(to).saturating_duration_since(start.max(from)))
            .sum()
    }
}

/// Makes the two baseline databases in `dir` and starts taking turns; the store's
/// appends must hold a read guard of [`Turns::gate`].
pub(crate) async fn start(dir: &Path) -> Result<Turns, CliError> {
    let schema_db = make_store_schema(dir, "interleaved-schema.db").await?;
    let plain_db = dir.join("interleaved-raw.db");
    let gate: Gate = Arc::new(RwLock::new(()));
    let done = Arc::new(AtomicBool::new(false));
    let thread = {
        let (gate, done) = (Arc::clone(&gate), Arc::clone(&done));
        tokio::task::spawn_blocking(move || {
            let result = take_turns(&plain_db, &schema_db, &gate, &done);
            remove_database(&plain_db);
            remove_database(&schema_db);
            result
        })
    };
    Ok(Turns { gate, done, thread })
}

impl Turns {
    /// The gate to give the store's appends.
    pub(crate) fn gate(&self) -> Gate {
        Arc::clone(&self.gate)
    }

    /// Stops taking turns (once the store is done) and answers what was measured.
    pub(crate) async fn finish(self) -> Result<Taken, CliError> {
        self.done.store(true, Ordering::Release);
        self.thread
            .await
            .map_err(|e| CliError::Bench(format!("the interleaved baselines failed: {e}")))?
    }
}

fn take_turns(
    plain_db: &Path,
    schema_db: &Path,
    gate: &RwLock<()>,
    done: &AtomicBool,
) -> Result<Taken, CliError> {
    let mut tables = [
        RawTable::plain(plain_db)?,
        RawTable::store_schema(schema_db)?,
    ];
    let mut measured = [(0u64, Duration::ZERO); 2];
    let mut turns = Vec::new();
    let mut next = 0;
    'turns: loop {
        // The store's turn.
        let store_turn = Instant::now();
        while store_turn.elapsed() < TURN {
            if done.load(Ordering::Acquire) {
                break 'turns;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let guard = gate.blocking_write();
        if done.load(Ordering::Acquire) {
            break;
        }
        let held = Instant::now();
        let (rows, took) = tables[next].insert_for(1, TURN)?;
        turns.push((held, Instant::now()));
        drop(guard);
        measured[next].0 += rows;
        measured[next].1 += took;
        next = (next + 1) % tables.len();
    }
    // A store run shorter than two turns left a baseline unmeasured: measure it now.
    for (table, m) in tables.iter_mut().zip(&mut measured) {
        if m.0 == 0 && !stopped() {
            *m = table.insert_for(1, TURN)?;
        }
    }
    let rate = |(rows, took): (u64, Duration)| rows as f64 / took.as_secs_f64().max(1e-9);
    Ok(Taken {
        raw_tx1_per_sec: rate(measured[0]),
        raw_schema_tx1_per_sec: rate(measured[1]),
        turns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_part_of_a_turn_inside_the_run_pauses_it() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let taken = Taken {
            raw_tx1_per_sec: 0.0,
            raw_schema_tx1_per_sec: 0.0,
            // Before the run, straddling its start, inside, straddling its end, after.
            turns: vec![
                (at(0), at(5)),
                (at(8), at(12)),
                (at(20), at(30)),
                (at(95), at(110)),
                (at(120), at(130)),
            ],
        };
        assert_eq!(
            taken.paused_within(at(10), at(100)),
            Duration::from_millis(2 + 10 + 5)
        );
    }
}
