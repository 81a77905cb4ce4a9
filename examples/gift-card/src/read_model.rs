//! The cards read model: one row per card in a SQLite table `gift_cards`, kept by the
//! toolkit's projection runner through foldstore-sqlite's [`SqliteReadModel`], which
//! applies each batch of events and the projection's checkpoint in one transaction.
//! After a crash the runner resumes after the last batch that took effect, so every
//! event counts exactly once. The table lives in a database of its own, whatever
//! backend holds the events.
//!
//! [`CardsReadModel::start`] runs it; [`rebuild`] folds `$all` again from zero, in
//! memory, to check it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use foldstore_core::projection::{
    HandlerError, ProjectionError, ProjectionMonitor, ProjectionRunner, Stopper,
};
use foldstore_core::{EventFilter, EventStore, Position, ReadAllOptions, ReadError, RecordedEvent};
use foldstore_sqlite::projection::{SqliteProjection, SqliteReadModel};
use rusqlite::{Connection, OpenFlags, Transaction};
use tokio::task::JoinHandle;

use crate::card::{CardId, GIFT_CARD_EVENT_TYPES, GiftCardEvent};

/// The projection's name (its checkpoint row and lock file).
pub const NAME: &str = "gift_cards";

/// One card as the read model shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CardRow {
    /// Its value when issued, in cents.
    pub issued: u64,
    /// What was spent.
    pub redeemed: u64,
    /// How many redemptions.
    pub redemptions: u64,
    /// Whether it was cancelled.
    pub cancelled: bool,
}

impl CardRow {
    /// What is still owed on it: nothing once cancelled.
    pub fn balance(&self) -> u64 {
        if self.cancelled {
            0
        } else {
            self.issued.saturating_sub(self.redeemed)
        }
    }

    fn apply(&mut self, event: &GiftCardEvent) {
        match event {
            GiftCardEvent::Issued { amount, .. } => self.issued = *amount,
            GiftCardEvent::Redeemed { amount, .. } => {
                self.redeemed += amount;
                self.redemptions += 1;
            }
            GiftCardEvent::Cancelled { .. } => self.cancelled = true,
        }
    }
}

/// Keeps the `gift_cards` table.
#[derive(Debug, Default)]
pub struct CardsTable;

impl SqliteProjection for CardsTable {
    fn setup(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS gift_cards (
                 card        INTEGER PRIMARY KEY,
                 issued      INTEGER NOT NULL DEFAULT 0,
                 redeemed    INTEGER NOT NULL DEFAULT 0,
                 redemptions INTEGER NOT NULL DEFAULT 0,
                 cancelled   INTEGER NOT NULL DEFAULT 0
             )",
        )
    }

    fn apply(&mut self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), HandlerError> {
        let Some(event) = GiftCardEvent::decode(event) else {
            return Ok(());
        };
        let card = event.card().0;
        tx.execute(
            "INSERT INTO gift_cards (card) VALUES (?1) ON CONFLICT (card) DO NOTHING",
            [card],
        )?;
        match event {
            GiftCardEvent::Issued { amount, .. } => tx.execute(
                "UPDATE gift_cards SET issued = ?2 WHERE card = ?1",
                (card, amount as i64),
            )?,
            GiftCardEvent::Redeemed { amount, .. } => tx.execute(
                "UPDATE gift_cards SET redeemed = redeemed + ?2, redemptions = redemptions + 1
                  WHERE card = ?1",
                (card, amount as i64),
            )?,
            GiftCardEvent::Cancelled { .. } => tx.execute(
                "UPDATE gift_cards SET cancelled = 1 WHERE card = ?1",
                [card],
            )?,
        };
        Ok(())
    }

    fn reset(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute("DELETE FROM gift_cards", []).map(|_| ())
    }
}

/// Reads every row of the `gift_cards` table.
pub fn rows(conn: &Connection) -> rusqlite::Result<BTreeMap<CardId, CardRow>> {
    let mut statement = conn.prepare(
        "SELECT card, issued, redeemed, redemptions, cancelled FROM gift_cards ORDER BY card",
    )?;
    let rows = statement.query_map([], |r| {
        let n = |i| r.get::<_, i64>(i).map(|v| v as u64);
        Ok((
            CardId(r.get(0)?),
            CardRow {
                issued: n(1)?,
                redeemed: n(2)?,
                redemptions: n(3)?,
                cancelled: r.get(4)?,
            },
        ))
    })?;
    rows.collect()
}

/// What is still owed on all cards together: the shop's liability.
pub fn outstanding(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT coalesce(sum(issued - redeemed), 0) FROM gift_cards WHERE cancelled = 0",
        [],
        |r| r.get::<_, i64>(0).map(|v| v as u64),
    )
}

/// Folds every gift-card event of `$all` from zero, in memory: what the table must
/// hold once the runner has caught up.
pub async fn rebuild(store: &dyn EventStore) -> Result<BTreeMap<CardId, CardRow>, ReadError> {
    let mut cards: BTreeMap<CardId, CardRow> = BTreeMap::new();
    for event in gift_card_events(store).await? {
        cards.entry(event.card()).or_default().apply(&event);
    }
    Ok(cards)
}

/// Every gift-card event of `$all`, in order, read a page at a time.
pub async fn gift_card_events(store: &dyn EventStore) -> Result<Vec<GiftCardEvent>, ReadError> {
    const PAGE: usize = 1000;
    let mut events = Vec::new();
    let mut from = None;
    loop {
        let mut options = ReadAllOptions::forwards().max_count(PAGE).filter(filter());
        options.from = from;
        let page = store.read_all(options).await?;
        events.extend(page.iter().filter_map(GiftCardEvent::decode));
        match page.last() {
            Some(last) if page.len() == PAGE => from = Some(last.position.next()),
            _ => return Ok(events),
        }
    }
}

fn filter() -> EventFilter {
    EventFilter::all().with_types(GIFT_CARD_EVENT_TYPES)
}

/// The read model's runner, following the store on a task of its own.
pub struct CardsReadModel {
    path: PathBuf,
    store: Arc<dyn EventStore>,
    monitor: ProjectionMonitor,
    stopper: Stopper,
    task: JoinHandle<Result<(), ProjectionError>>,
}

impl CardsReadModel {
    /// Opens (or creates) the read model's database at `path` and starts following
    /// `store` from the read model's checkpoint.
    pub fn start(
        store: Arc<dyn EventStore>,
        path: impl AsRef<Path>,
    ) -> Result<Self, ProjectionError> {
        let path = path.as_ref().to_path_buf();
        let target = SqliteReadModel::open(&path, NAME, CardsTable)?;
        let mut runner = ProjectionRunner::new(store.clone(), target).filter(filter());
        let monitor = runner.monitor();
        let stopper = Stopper::new();
        let signal = stopper.signal();
        let task = tokio::spawn(async move { runner.run(signal).await });
        Ok(Self {
            path,
            store,
            monitor,
            stopper,
            task,
        })
    }

    /// A read-only connection to the read model's database, for queries such as
    /// [`rows`] and [`outstanding`].
    pub fn connect(&self) -> rusqlite::Result<Connection> {
        Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)
    }

    /// Waits until every gift-card event stored so far has been applied (at most
    /// `timeout`). Returns whether it got there.
    pub async fn caught_up(&self, timeout: Duration) -> Result<bool, ReadError> {
        let last = self
            .store
            .read_all(ReadAllOptions::backwards().max_count(1).filter(filter()))
            .await?
            .first()
            .map(|e| e.position);
        let Some(last) = last else {
            return Ok(true);
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let at: Option<Position> = self.monitor.status().checkpoint;
            if at.is_some_and(|p| p >= last) {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the runner after the batch it is applying, and returns how its run ended.
    pub async fn stop(self) -> Result<(), ProjectionError> {
        self.stopper.stop();
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ProjectionError::storage(NAME, e.to_string())),
        }
    }
}
