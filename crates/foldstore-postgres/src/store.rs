//! [`PostgresStore`]: the [`EventStore`] over PostgreSQL.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use deadpool_postgres::{Manager, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime};
use foldstore_core::dcb::{Query, ReadQueryOptions};
use foldstore_core::rules::{StreamState, Visibility, check_delete, validate_transaction};
use foldstore_core::snapshot::{Snapshot, SnapshotError, SnapshotStore, validate_state_type};
use foldstore_core::subscription::{CommitNotifier, subscribe_all, subscribe_stream};
use foldstore_core::transaction::{AppendTransaction, TransactionResult, validate_tracking_source};
use foldstore_core::{
    AppendError, BackendError, BackendErrorKind, DeleteError, Direction, EventFilter, EventStore,
    EventSubscription, ExpectedRevision, MetadataError, Position, ReadAllOptions, ReadError,
    ReadStreamOptions, RecordedEvent, StreamMetadata, StreamName, SubscribeFrom,
    SubscribeStreamFrom, group_hash,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_postgres::NoTls;
use tokio_postgres::types::{Json, ToSql, Type};
use tracing::Instrument;

use crate::error::{ConnectError, Effect, backend};
use crate::locks::matches_everything;
use crate::names::{NAME_READ_AHEAD, NameCache};
use crate::pg::{EVENT_COLUMNS, Xid8, event_from_row, split, to_i64, to_u64};
use crate::schema::{check_schema_name, check_transaction_ids, migrate};
use crate::writer::{Request, writer};
use crate::{PostgresOptions, watch};

/// The statements of one schema.
pub(crate) struct Sql {
    schema: String,
    pub(crate) append_transaction: String,
    pub(crate) append_batch: String,
    pub(crate) lock_keys: String,
    pub(crate) lock_streams: String,
    pub(crate) tracking: String,
    pub(crate) xmin: String,
    pub(crate) head: String,
    pub(crate) poll: String,
    pub(crate) stream: String,
    pub(crate) listen: String,
    pub(crate) notify: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        let channel = format!("\"{schema}_commits\"");
        Self {
            schema: s.clone(),
            append_transaction: format!(
                "SELECT written, tx, first_revisions, first_seq, last_seq, last_revisions, \
                 deleted_befores, tombstones, stored_streams, stored_revisions, stored_txs, \
                 stored_seqs, condition_tx, condition_seq, \
                 tracked_position::text AS tracked_position \
                 FROM {s}.append_transaction($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23::text::numeric)"
            ),
            append_batch: format!(
                "SELECT out_written, out_first_revision, out_tx, out_first_seq, out_last_seq \
                 FROM {s}.append_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                 $13, $14, $15)"
            ),
            lock_keys: format!("SELECT {s}.lock_keys($1, $2)"),
            lock_streams: format!("SELECT {s}.lock_streams($1, $2, $3)"),
            tracking: format!("SELECT position::text FROM {s}.tracking WHERE source = $1"),
            xmin: "SELECT pg_snapshot_xmin(pg_current_snapshot())".to_owned(),
            head: format!(
                "SELECT tx, seq FROM {s}.events \
                 WHERE tx < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY tx DESC, seq DESC LIMIT 1"
            ),
            poll: format!(
                "SELECT x.xmin, h.tx, h.seq, (SELECT counter FROM {s}.changes WHERE id = 1) \
                 FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) x \
                 LEFT JOIN LATERAL (SELECT tx, seq FROM {s}.events WHERE tx < x.xmin \
                                    ORDER BY tx DESC, seq DESC LIMIT 1) h ON true"
            ),
            stream: format!(
                "SELECT id, last_revision, deleted_before, tombstoned, metadata \
                 FROM {s}.streams WHERE name = $1"
            ),
            listen: format!("LISTEN {channel}"),
            notify: format!("NOTIFY {channel}"),
        }
    }
}

/// What the store's handles and background tasks share.
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    pub(crate) pg_config: tokio_postgres::Config,
    pub(crate) sql: Sql,
    pub(crate) options: PostgresOptions,
    pub(crate) commits: CommitNotifier,
    /// The highest transaction id of a position this store returned from an append.
    acknowledged_tx: AtomicU64,
    /// The highest snapshot xmin seen: every transaction below it has finished.
    pub(crate) known_xmin: AtomicU64,
    /// Stream names by stream id (names never change).
    names: NameCache,
    /// Wakes the poller.
    pub(crate) poke: Notify,
    /// Asks the hint task to send a `NOTIFY`.
    pub(crate) hint: Notify,
    /// What the group commit did so far ([`PostgresStore::group_commit_stats`]).
    pub(crate) stats: GroupCommitCounters,
    /// Connections for global-order and DCB query reads, driven by their readers
    /// (`driven.rs`).
    readers: crate::driven::Readers,
}

/// The counters behind [`GroupCommitStats`].
#[derive(Default)]
pub(crate) struct GroupCommitCounters {
    pub(crate) fast_written: AtomicU64,
    pub(crate) fast_transactions: AtomicU64,
    pub(crate) fast_rolled_back: AtomicU64,
    pub(crate) slow_answered: AtomicU64,
    pub(crate) slow_conflicts: AtomicU64,
}

/// What this store's group commit did since it opened: how many appends each of its two
/// paths answered (docs/semantics.md §5). Counted for this process only.
///
/// ```no_run
/// # async fn show(store: foldstore_postgres::PostgresStore) {
/// let stats = store.group_commit_stats();
/// println!("{} appends took the fast path", stats.fast_written);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupCommitStats {
    /// Appends written by the fast path (`append_batch`, a few calls per group).
    pub fast_written: u64,
    /// Fast-path transactions committed: `fast_written / fast_transactions` is the
    /// average number of appends that shared one transaction.
    pub fast_transactions: u64,
    /// Fast-path transactions that rolled back (an id committed concurrently, a
    /// deadlock, a timeout); their appends went on to the slow path.
    pub fast_rolled_back: u64,
    /// Appends answered by the slow path (one `append` call each): conditional and
    /// empty appends, the ones the fast path left unwritten (retries, refusals), and
    /// those of rolled-back fast transactions.
    pub slow_answered: u64,
    /// Slow-path transactions that PostgreSQL rolled back for a deadlock or a
    /// serialization failure, and that were run again. Stream rows and advisory locks
    /// are taken in one order, so this stays 0 unless something outside foldstore
    /// holds the same locks.
    pub slow_conflicts: u64,
}

impl Shared {
    /// Records an acknowledged append and wakes whoever should know.
    pub(crate) fn acknowledged(&self, tx: u64) {
        self.acknowledged_tx.fetch_max(tx, Ordering::AcqRel);
        // Stream reads see the commit at once; the poller will see it in `$all`.
        self.commits.notify();
        self.poke.notify_one();
        if self.options.notify {
            self.hint.notify_one();
        }
    }

    /// A change that adds no event (delete, tombstone, metadata) committed.
    fn changed(&self) {
        self.commits.notify();
        self.poke.notify_one();
        if self.options.notify {
            self.hint.notify_one();
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Request>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// An event store in PostgreSQL.
///
/// Cloning it gives another handle to the same store; the background tasks (group
/// commit writers, the poller, the listener) stop when the last handle is dropped.
/// Many processes may open the same schema: they share one global order, and
/// subscriptions in each see the appends of all.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.shared.options.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects, creates or migrates the schema, and starts the background tasks.
    ///
    /// Must be called within a Tokio runtime (the tasks are spawned on it).
    pub async fn connect(options: PostgresOptions) -> Result<Self, ConnectError> {
        check_schema_name(&options.schema)?;
        if options.pool_size < 2 {
            return Err(ConnectError::InvalidOption(format!(
                "pool_size is {}; it must be at least 2",
                options.pool_size
            )));
        }
        if options.writers == 0 || options.writers >= options.pool_size {
            return Err(ConnectError::InvalidOption(format!(
                "writers is {}; it must be at least 1 and below pool_size ({})",
                options.writers, options.pool_size
            )));
        }
        let mut config: tokio_postgres::Config =
            options.url.parse().map_err(|e| ConnectError::InvalidUrl {
                reason: crate::connect::chain(&e),
            })?;
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("foldstore");
        }
        if let Some(timeout) = options.statement_timeout {
            let mut pg_options = config.get_options().unwrap_or("").to_owned();
            pg_options.push_str(&format!(
                " -c statement_timeout={}",
                timeout.as_millis().max(1)
            ));
            config.options(pg_options.trim());
        }

        let (mut client, connection) =
            crate::connect::connect(&config, options.connect_timeout).await?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut migrated = migrate(&mut client, &options.schema).await;
        if migrated.is_ok() {
            migrated = check_transaction_ids(&client, &options.schema).await;
        }
        drop(client);
        let _ = driver.await;
        migrated?;

        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            // The connection returned last is handed out first, so a reader paging
            // through the log keeps one backend, warm in the CPU's caches, instead of
            // cycling through every idle one: interleaved `bench read-all` runs read
            // 468k-506k events/s against 288k-438k first in, first out, and
            // append-batch and append-1 gained 8-15% too (docs/benchmarks.md).
            .queue_mode(QueueMode::Lifo)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| ConnectError::InvalidOption(format!("connection pool: {e}")))?;

        let shared = Arc::new(Shared {
            pool,
            pg_config: config,
            sql: Sql::new(&options.schema),
            commits: CommitNotifier::new(),
            acknowledged_tx: AtomicU64::new(0),
            known_xmin: AtomicU64::new(0),
            names: NameCache::default(),
            poke: Notify::new(),
            hint: Notify::new(),
            stats: GroupCommitCounters::default(),
            readers: crate::driven::Readers::new(),
            options,
        });
        let (queue, rx) = mpsc::channel(shared.options.max_batch.max(1) * 4);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut tasks = Vec::new();
        for _ in 0..shared.options.writers {
            tasks.push(tokio::spawn(writer(shared.clone(), rx.clone())).abort_handle());
        }
        tasks.push(tokio::spawn(watch::poller(shared.clone())).abort_handle());
        if shared.options.notify {
            tasks.push(tokio::spawn(watch::listener(shared.clone())).abort_handle());
            tasks.push(tokio::spawn(watch::hinter(shared.clone())).abort_handle());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                queue,
                tasks,
            }),
        })
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &PostgresOptions {
        &self.inner.shared.options
    }

    /// What this store's group commit did since it opened.
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        let c = &self.inner.shared.stats;
        GroupCommitStats {
            fast_written: c.fast_written.load(Ordering::Relaxed),
            fast_transactions: c.fast_transactions.load(Ordering::Relaxed),
            fast_rolled_back: c.fast_rolled_back.load(Ordering::Relaxed),
            slow_answered: c.slow_answered.load(Ordering::Relaxed),
            slow_conflicts: c.slow_conflicts.load(Ordering::Relaxed),
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, BackendError> {
        self.shared().pool.get().await.map_err(crate::error::pool)
    }

    /// Waits until this store's acknowledged appends are visible to global-order reads
    /// (every transaction up to the last one acknowledged has finished), at most
    /// `read_your_writes_timeout`; after that it lets the read go on without them.
    async fn wait_for_own_writes(&self) -> Result<(), BackendError> {
        let shared = self.shared();
        let target = shared.acknowledged_tx.load(Ordering::Acquire);
        if target == 0 || shared.known_xmin.load(Ordering::Acquire) > target {
            return Ok(());
        }
        let deadline = Instant::now() + shared.options.read_your_writes_timeout;
        let mut pause = Duration::from_micros(200);
        loop {
            // A connection only for the query, not for the pause: while an old
            // transaction holds the horizon back, waiting readers must not starve the
            // writers of connections.
            let xmin = {
                let conn = self.conn().await?;
                let stmt = conn
                    .prepare_cached(&shared.sql.xmin)
                    .await
                    .map_err(|e| backend(e, Effect::None))?;
                let row = conn
                    .query_one(&stmt, &[])
                    .await
                    .map_err(|e| backend(e, Effect::None))?;
                let xmin: Xid8 = row.try_get(0).map_err(incompatible)?;
                xmin.0
            };
            shared.known_xmin.fetch_max(xmin, Ordering::AcqRel);
            if xmin > target {
                return Ok(());
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    waited = ?shared.options.read_your_writes_timeout,
                    "foldstore: a transaction older than this store's last append is still running; \
                     reading the global order without waiting for it (find it in pg_stat_activity)"
                );
                return Ok(());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    async fn read_all_visible(
        &self,
        options: &ReadAllOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        options.filter.validate()?;
        if options.max_count == 0 {
            return Ok(Vec::new());
        }
        let s = &self.shared().sql.schema;
        let forwards = options.direction == Direction::Forwards;
        let mut sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {s}.events e \
             WHERE e.tx < pg_snapshot_xmin(pg_current_snapshot())"
        );
        // Sent as unnamed statements (`query_typed`), so each read is planned with its
        // own values and the table's current size: a cached generic plan made while the
        // log was small would sort the whole log on every page.
        let mut params: Vec<(Box<dyn ToSql + Sync + Send>, Type)> = Vec::new();
        let mut bind = |value: Box<dyn ToSql + Sync + Send>, ty: Type| {
            params.push((value, ty));
            format!("${}", params.len())
        };
        if let Some(from) = options.from {
            let (tx, seq) = split(from, forwards);
            let op = if forwards { ">=" } else { "<=" };
            // One row comparison, so that the (tx, seq) index serves it.
            let (tx, seq) = (
                bind(Box::new(tx), Type::XID8),
                bind(Box::new(seq), Type::INT8),
            );
            sql.push_str(&format!(" AND (e.tx, e.seq) {op} ({tx}, {seq})"));
        }
        let filter = &options.filter;
        if let Some(category) = &filter.category {
            // Served by the events_category index, in global order; the category's
            // name is rechecked below (a hash collision only costs reading).
            let h = bind(Box::new(to_i64(group_hash(category))), Type::INT8);
            sql.push_str(&format!(" AND e.category_hash = {h}"));
        }
        // Conditions on the stream select its ids (PostgreSQL hashes them once per
        // read) rather than joining every event with its stream.
        let mut on_stream = Vec::new();
        if let Some(category) = &filter.category {
            let c = bind(Box::new(category.clone()), Type::TEXT);
            on_stream.push(format!("s.category = {c}"));
        }
        if let Some(prefix) = &filter.stream_prefix {
            let p = bind(Box::new(prefix.clone()), Type::TEXT);
            on_stream.push(format!("starts_with(s.name, {p})"));
        }
        if let Some(group) = filter.consumer_group {
            let size = bind(Box::new(i64::from(group.size)), Type::INT8);
            let member = bind(Box::new(i64::from(group.member)), Type::INT8);
            on_stream.push(format!("s.group_hash % {size} = {member}"));
        }
        if !on_stream.is_empty() {
            sql.push_str(&format!(
                " AND e.stream_id IN (SELECT s.id FROM {s}.streams s WHERE {})",
                on_stream.join(" AND ")
            ));
        }
        if !filter.event_types.is_empty() {
            let t = bind(Box::new(filter.event_types.clone()), Type::TEXT_ARRAY);
            sql.push_str(&format!(" AND e.event_type = ANY({t})"));
        }
        let dir = if forwards { "ASC" } else { "DESC" };
        let limit = bind(Box::new(to_i64(options.max_count as u64)), Type::INT8);
        sql.push_str(&format!(" ORDER BY e.tx {dir}, e.seq {dir} LIMIT {limit}"));
        Ok(self.events_of(&sql, &params).await?)
    }

    /// A Dynamic Consistency Boundary read below the visibility horizon, like
    /// [`PostgresStore::read_all_visible`]. Each query item becomes index probes
    /// (`event_tags` for an item with tags, `events_type` for each type of an item with
    /// types only), each already filtered by `after`, the horizon and, with a limit,
    /// cut at `limit` rows in global order; `UNION ALL` merges them and `DISTINCT ON`
    /// drops events that several items match. A query matching everything is a range
    /// read of the global order.
    async fn read_query_visible(
        &self,
        query: &Query,
        options: &ReadQueryOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let limit = options.limit.unwrap_or(usize::MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let s = &self.shared().sql.schema;
        let mut params: Vec<(Box<dyn ToSql + Sync + Send>, Type)> = Vec::new();
        let mut bind = |value: Box<dyn ToSql + Sync + Send>, ty: Type| {
            params.push((value, ty));
            format!("${}", params.len())
        };
        let (after_tx, after_seq) = options.after.map_or((Xid8(0), 0), |p| split(p, false));
        let after = format!(
            "({}, {})",
            bind(Box::new(after_tx), Type::XID8),
            bind(Box::new(after_seq), Type::INT8)
        );
        let limit = bind(Box::new(to_i64(limit as u64)), Type::INT8);
        let cut = if options.limit.is_some() {
            format!(" ORDER BY x.tx, x.seq LIMIT {limit}")
        } else {
            String::new()
        };
        let visible = "pg_snapshot_xmin(pg_current_snapshot())";
        let sql = if matches_everything(query) {
            format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events e \
                 WHERE e.tx < {visible} AND (e.tx, e.seq) > {after} \
                 ORDER BY e.tx, e.seq LIMIT {limit}"
            )
        } else {
            let mut members = Vec::with_capacity(query.items.len());
            for item in &query.items {
                let mut tags: Vec<String> = item.tags.clone();
                tags.sort();
                tags.dedup();
                match tags.first() {
                    Some(first) => {
                        let first = bind(Box::new(first.clone()), Type::TEXT);
                        let all = bind(Box::new(tags), Type::TEXT_ARRAY);
                        let mut m = format!(
                            "SELECT x.* FROM {s}.event_tags t \
                             JOIN {s}.events x ON x.tx = t.tx AND x.seq = t.seq \
                             WHERE t.tag = {first} AND (t.tx, t.seq) > {after} \
                             AND t.tx < {visible} AND x.tags @> {all}"
                        );
                        if !item.types.is_empty() {
                            let types = bind(Box::new(item.types.clone()), Type::TEXT_ARRAY);
                            m.push_str(&format!(" AND x.event_type = ANY({types})"));
                        }
                        members.push(format!("({m}{cut})"));
                    }
                    None => {
                        let mut types = item.types.clone();
                        types.sort();
                        types.dedup();
                        for t in types {
                            let t = bind(Box::new(t), Type::TEXT);
                            members.push(format!(
                                "(SELECT x.* FROM {s}.events x WHERE x.event_type = {t} \
                                 AND (x.tx, x.seq) > {after} AND x.tx < {visible}{cut})"
                            ));
                        }
                    }
                }
            }
            format!(
                "SELECT DISTINCT ON (e.tx, e.seq) {EVENT_COLUMNS} FROM ({}) e \
                 ORDER BY e.tx, e.seq LIMIT {limit}",
                members.join(" UNION ALL ")
            )
        };
        Ok(self.events_of(&sql, &params).await?)
    }

    /// Runs `sql` (selecting [`EVENT_COLUMNS`]) as an unnamed statement and decodes
    /// its rows, naming their streams from the name cache (one query for the names it
    /// lacks). The statement runs on a reader connection (`driven.rs`), or on the pool
    /// when no reader is free or usable.
    ///
    /// The page is collected before decoding. Decoding rows as they arrive
    /// (`query_typed_raw`) was measured slower: 128k-153k against 162k-226k events/s
    /// for `bench read-all`, interleaved runs on the same machine, because each
    /// arriving chunk then costs a task wake-up between the connection and the reader.
    async fn events_of(
        &self,
        sql: &str,
        params: &[(Box<dyn ToSql + Sync + Send>, Type)],
    ) -> Result<Vec<RecordedEvent>, BackendError> {
        let params: Vec<(&(dyn ToSql + Sync), Type)> = params
            .iter()
            .map(|(p, t)| (p.as_ref() as &(dyn ToSql + Sync), t.clone()))
            .collect();
        let shared = self.shared();
        let rows = match shared.readers.query(&shared.pg_config, sql, &params).await {
            crate::driven::Outcome::Rows(rows) => rows,
            crate::driven::Outcome::Refused(e) => return Err(backend(e, Effect::None)),
            crate::driven::Outcome::UsePool => self
                .conn()
                .await?
                .query_typed(sql, &params)
                .await
                .map_err(|e| backend(e, Effect::None))?,
        };
        let names = self.stream_names(&rows).await?;
        let mut events = Vec::with_capacity(rows.len());
        for (row, name) in rows.iter().zip(names) {
            events.push(event_from_row(row, name)?);
        }
        Ok(events)
    }

    /// The stream names of event rows, from the name cache; the names it lacks (and
    /// the next [`NAME_READ_AHEAD`] stream ids' names, see [`crate::names`]) are read
    /// in one query, on a connection from the pool.
    async fn stream_names(
        &self,
        rows: &[tokio_postgres::Row],
    ) -> Result<Vec<StreamName>, BackendError> {
        let ids = rows
            .iter()
            .map(crate::pg::stream_id_of)
            .collect::<Result<Vec<i64>, _>>()?;
        let shared = self.shared();
        let lookup = shared.names.lookup(&ids);
        let mut found = HashMap::new();
        if let Some(&last) = lookup.missing.last() {
            let rows = self
                .conn()
                .await?
                .query_typed(
                    &format!(
                        "SELECT id, name FROM {}.streams \
                         WHERE id = ANY($1) OR (id > $2 AND id <= $2 + $3)",
                        shared.sql.schema
                    ),
                    &[
                        (&lookup.missing, Type::INT8_ARRAY),
                        (&last, Type::INT8),
                        (&NAME_READ_AHEAD, Type::INT8),
                    ],
                )
                .await
                .map_err(|e| backend(e, Effect::None))?;
            found.reserve(rows.len());
            for row in &rows {
                let id: i64 = row.try_get(0).map_err(incompatible)?;
                let name: String = row.try_get(1).map_err(incompatible)?;
                found.insert(id, crate::pg::stream_name(name)?);
            }
        }
        shared.names.complete(lookup, &ids, found)
    }

    async fn head_visible(&self) -> Result<Option<Position>, ReadError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(&self.shared().sql.head)
            .await
            .map_err(|e| backend(e, Effect::None))?;
        let row = conn
            .query_opt(&stmt, &[])
            .await
            .map_err(|e| backend(e, Effect::None))?;
        let Some(row) = row else { return Ok(None) };
        let tx: Xid8 = row.try_get(0).map_err(incompatible)?;
        let seq: i64 = row.try_get(1).map_err(incompatible)?;
        Ok(Some(crate::pg::position(tx, seq)))
    }

    async fn delete(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        tombstone: bool,
    ) -> Result<(), DeleteError> {
        let s = &self.shared().sql.schema;
        let mut conn = self.conn().await?;
        let none = |e| backend(e, Effect::None);
        let tx = conn.transaction().await.map_err(none)?;
        if tombstone {
            tx.execute(
                &format!(
                    "INSERT INTO {s}.streams (name, category, group_hash) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO NOTHING"
                ),
                &[
                    &stream.as_str(),
                    &stream.category(),
                    &to_i64(group_hash(stream.id())),
                ],
            )
            .await
            .map_err(none)?;
        }
        let row = tx
            .query_opt(
                &format!(
                    "SELECT last_revision, deleted_before, tombstoned FROM {s}.streams \
                     WHERE name = $1 FOR UPDATE"
                ),
                &[&stream.as_str()],
            )
            .await
            .map_err(none)?;
        let state = match &row {
            Some(row) => state_from(
                row.try_get(0).map_err(incompatible)?,
                row.try_get(1).map_err(incompatible)?,
                row.try_get(2).map_err(incompatible)?,
            )?,
            None => StreamState::default(),
        };
        // The same rule as every backend (the transaction rolls back when it refuses).
        check_delete(stream, expected, &state)?;
        if row.is_none() {
            // Soft-deleting a stream that was never named: nothing to do.
            return Ok(());
        }
        let update = if tombstone {
            format!("UPDATE {s}.streams SET tombstoned = true WHERE name = $1")
        } else {
            format!(
                "UPDATE {s}.streams SET deleted_before = coalesce(last_revision + 1, 0) \
                 WHERE name = $1"
            )
        };
        tx.execute(&update, &[&stream.as_str()])
            .await
            .map_err(none)?;
        tx.execute(
            &format!("UPDATE {s}.changes SET counter = counter + 1 WHERE id = 1"),
            &[],
        )
        .await
        .map_err(none)?;
        tx.commit().await.map_err(|e| backend(e, Effect::Unknown))?;
        self.shared().changed();
        Ok(())
    }
}

fn incompatible(e: tokio_postgres::Error) -> BackendError {
    BackendError::new(
        BackendErrorKind::Incompatible,
        "a stored row could not be read; is the schema from another foldstore version?",
    )
    .with_source(e)
}

fn state_from(
    last_revision: Option<i64>,
    deleted_before: i64,
    tombstoned: bool,
) -> Result<StreamState, BackendError> {
    Ok(StreamState {
        last_revision: last_revision.map(|r| to_u64(r, "revision")).transpose()?,
        deleted_before: to_u64(deleted_before, "revision")?,
        tombstoned,
    })
}

impl PostgresStore {
    /// Hands a validated transaction to the group commit and waits for its answer.
    async fn commit(
        &self,
        transaction: AppendTransaction,
    ) -> Result<TransactionResult, AppendError> {
        let (reply, answer) = oneshot::channel();
        // From the hand-off to the answer: the wait for the group commit that carries
        // this transaction, and its database transaction.
        let commit = tracing::debug_span!("postgres.commit", events = transaction.event_count());
        let request = Request {
            transaction,
            reply,
            races: 0,
        };
        async {
            self.inner
                .queue
                .send(request)
                .await
                .map_err(|_| crate::error::closed())?;
            answer.await.map_err(|_| {
                AppendError::from(BackendError::new(
                    BackendErrorKind::OutcomeUnknown,
                    "the store shut down while the append was in flight: retry with the same ids",
                ))
            })?
        }
        .instrument(commit)
        .await
    }

    /// The stored tracking position of `source`.
    async fn tracked(&self, source: &str) -> Result<Option<Position>, ReadError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(&self.shared().sql.tracking)
            .await
            .map_err(|e| backend(e, Effect::None))?;
        let row = conn
            .query_opt(&stmt, &[&source])
            .await
            .map_err(|e| backend(e, Effect::None))?;
        let Some(row) = row else { return Ok(None) };
        let text: String = row.try_get(0).map_err(incompatible)?;
        text.parse::<Position>().map(Some).map_err(|e| {
            ReadError::Backend(
                BackendError::new(
                    BackendErrorKind::Incompatible,
                    "a stored tracking position is not a whole number; the data was changed outside foldstore",
                )
                .with_source(e),
            )
        })
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append_transaction(
        &self,
        transaction: AppendTransaction,
    ) -> Result<TransactionResult, AppendError> {
        validate_transaction(&transaction, &self.shared().options.limits)?;
        self.commit(transaction).await
    }

    async fn tracking(&self, source: &str) -> Result<Option<Position>, ReadError> {
        validate_tracking_source(source)?;
        self.tracked(source).await
    }

    async fn read_query(
        &self,
        query: &Query,
        options: ReadQueryOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        query.validate()?;
        self.wait_for_own_writes().await?;
        self.read_query_visible(query, &options).await
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let shared = self.shared();
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(&shared.sql.stream)
            .await
            .map_err(|e| backend(e, Effect::None))?;
        let row = conn
            .query_opt(&stmt, &[&stream.as_str()])
            .await
            .map_err(|e| backend(e, Effect::None))?;
        let not_found = || ReadError::StreamNotFound {
            stream: stream.clone(),
        };
        let Some(row) = row else {
            return Err(not_found());
        };
        let id: i64 = row.try_get(0).map_err(incompatible)?;
        let state = state_from(
            row.try_get(1).map_err(incompatible)?,
            row.try_get(2).map_err(incompatible)?,
            row.try_get(3).map_err(incompatible)?,
        )?;
        let metadata: Option<Json<serde_json::Value>> = row.try_get(4).map_err(incompatible)?;
        if state.tombstoned {
            return Err(ReadError::StreamTombstoned {
                stream: stream.clone(),
            });
        }
        let Some(last) = state.last_revision.filter(|_| state.exists()) else {
            return Err(not_found());
        };
        let metadata = metadata.map(|m| parse_metadata(m.0)).transpose()?;
        let vis = Visibility::of(&state, metadata.as_ref(), Utc::now());
        if options.max_count == 0 {
            return Ok(Vec::new());
        }
        let (low, high, order) = match options.direction {
            Direction::Forwards => (options.from.unwrap_or(0).max(vis.min_revision), last, "ASC"),
            Direction::Backwards => (
                vis.min_revision,
                options.from.map_or(last, |f| f.min(last)),
                "DESC",
            ),
        };
        if low > high {
            return Ok(Vec::new());
        }
        let s = &shared.sql.schema;
        let time = if vis.min_recorded_at.is_some() {
            " AND e.recorded_at >= $5"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {s}.events e \
             WHERE e.stream_id = $1 AND e.revision BETWEEN $2 AND $3{time} \
             ORDER BY e.revision {order} LIMIT $4"
        );
        let (low, high, limit) = (to_i64(low), to_i64(high), to_i64(options.max_count as u64));
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![
            (&id, Type::INT8),
            (&low, Type::INT8),
            (&high, Type::INT8),
            (&limit, Type::INT8),
        ];
        if let Some(t) = &vis.min_recorded_at {
            params.push((t, Type::TIMESTAMPTZ));
        }
        // An unnamed statement: planned with its own values each time.
        let rows = conn
            .query_typed(&sql, &params)
            .await
            .map_err(|e| backend(e, Effect::None))?;
        rows.iter()
            .map(|row| event_from_row(row, stream.clone()).map_err(ReadError::from))
            .collect()
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError> {
        options.filter.validate()?;
        self.wait_for_own_writes().await?;
        self.read_all_visible(&options).await
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError> {
        self.delete(stream, expected, false).await
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError> {
        self.delete(stream, expected, true).await
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamName>, ReadError> {
        let s = &self.shared().sql.schema;
        let conn = self.conn().await?;
        // Byte order whatever the database's collation, as the trait promises.
        let rows = conn
            .query(
                &format!(
                    "SELECT name FROM {s}.streams
                     WHERE starts_with(name, $1) AND name COLLATE \"C\" > $2
                       AND last_revision IS NOT NULL
                     ORDER BY name COLLATE \"C\" LIMIT $3"
                ),
                &[
                    &prefix,
                    &after.map_or("", |a| a.as_str()),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(|e| backend(e, Effect::None))?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get(0).map_err(incompatible)?;
                StreamName::new(name).map_err(|e| {
                    ReadError::from(BackendError::new(
                        BackendErrorKind::Internal,
                        format!("a stored stream name is invalid: {e}"),
                    ))
                })
            })
            .collect()
    }

    async fn stream_metadata(
        &self,
        stream: &StreamName,
    ) -> Result<Option<StreamMetadata>, MetadataError> {
        let s = &self.shared().sql.schema;
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                &format!("SELECT tombstoned, metadata FROM {s}.streams WHERE name = $1"),
                &[&stream.as_str()],
            )
            .await
            .map_err(|e| backend(e, Effect::None))?;
        let Some(row) = row else { return Ok(None) };
        let tombstoned: bool = row.try_get(0).map_err(incompatible)?;
        if tombstoned {
            return Err(MetadataError::StreamTombstoned {
                stream: stream.clone(),
            });
        }
        let metadata: Option<Json<serde_json::Value>> = row.try_get(1).map_err(incompatible)?;
        Ok(metadata.map(|m| parse_metadata(m.0)).transpose()?)
    }

    async fn set_stream_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<(), MetadataError> {
        let s = &self.shared().sql.schema;
        let value = serde_json::to_value(&metadata).map_err(|e| {
            BackendError::new(BackendErrorKind::Internal, "metadata did not serialize")
                .with_source(e)
        })?;
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                &format!(
                    "WITH up AS ( \
                       INSERT INTO {s}.streams (name, category, group_hash, metadata) \
                       VALUES ($1, $2, $3, $4) \
                       ON CONFLICT (name) DO UPDATE SET metadata = EXCLUDED.metadata \
                       WHERE NOT {s}.streams.tombstoned \
                       RETURNING id), \
                     bump AS ( \
                       UPDATE {s}.changes SET counter = counter + 1 \
                       WHERE id = 1 AND EXISTS (SELECT 1 FROM up)) \
                     SELECT count(*) FROM up"
                ),
                &[
                    &stream.as_str(),
                    &stream.category(),
                    &to_i64(group_hash(stream.id())),
                    &Json(value),
                ],
            )
            .await
            .map_err(|e| backend(e, Effect::Unknown))?;
        let updated: i64 = row.try_get(0).map_err(incompatible)?;
        if updated == 0 {
            return Err(MetadataError::StreamTombstoned {
                stream: stream.clone(),
            });
        }
        self.shared().changed();
        Ok(())
    }

    async fn head_position(&self) -> Result<Option<Position>, ReadError> {
        self.wait_for_own_writes().await?;
        self.head_visible().await
    }

    async fn subscribe_to_all(
        &self,
        from: SubscribeFrom,
        filter: EventFilter,
    ) -> Result<EventSubscription, ReadError> {
        filter.validate()?;
        // `End` must not replay this store's own acknowledged appends: resolve it with
        // the waiting head, not the subscription reader's.
        let from = match from {
            SubscribeFrom::End => match self.head_position().await? {
                Some(head) => SubscribeFrom::After(head),
                None => SubscribeFrom::Start,
            },
            other => other,
        };
        let live = Live(self.clone());
        subscribe_all(live, &self.shared().commits, from, filter).await
    }

    async fn subscribe_to_stream(
        &self,
        stream: &StreamName,
        from: SubscribeStreamFrom,
    ) -> Result<EventSubscription, ReadError> {
        let live = Live(self.clone());
        subscribe_stream(live, &self.shared().commits, stream.clone(), from).await
    }
}

fn parse_metadata(value: serde_json::Value) -> Result<StreamMetadata, BackendError> {
    serde_json::from_value(value).map_err(|e| {
        BackendError::new(
            BackendErrorKind::Incompatible,
            "stored stream metadata has fields this version does not know: upgrade foldstore",
        )
        .with_source(e)
    })
}

/// The store as subscriptions read it: global-order reads do not wait for this store's
/// own writes (the poller wakes subscriptions when they become visible), and reads that
/// fail because PostgreSQL is unreachable are retried with backoff for
/// `subscription_retry`, so a subscription outlives a restart of the server and goes on
/// from its last position, with no gap and no duplicate.
#[derive(Clone)]
struct Live(PostgresStore);

impl Live {
    async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T, ReadError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ReadError>>,
    {
        let give_up = Instant::now() + self.0.shared().options.subscription_retry;
        let mut pause = Duration::from_millis(10);
        loop {
            match op().await {
                Err(ReadError::Backend(e))
                    if e.kind == BackendErrorKind::Unavailable && Instant::now() < give_up =>
                {
                    tracing::debug!(error = %e, "foldstore subscription: read failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl EventStore for Live {
    async fn append_transaction(
        &self,
        transaction: AppendTransaction,
    ) -> Result<TransactionResult, AppendError> {
        self.0.append_transaction(transaction).await
    }

    async fn tracking(&self, source: &str) -> Result<Option<Position>, ReadError> {
        self.retry(|| self.0.tracking(source)).await
    }

    async fn read_query(
        &self,
        query: &Query,
        options: ReadQueryOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.retry(|| self.0.read_query_visible(query, &options))
            .await
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        options: ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.retry(|| self.0.read_stream(stream, options.clone()))
            .await
    }

    async fn read_all(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError> {
        self.retry(|| self.0.read_all_visible(&options)).await
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError> {
        self.0.delete_stream(stream, expected).await
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
    ) -> Result<(), DeleteError> {
        self.0.tombstone_stream(stream, expected).await
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamName>, ReadError> {
        self.0.list_streams(prefix, after, limit).await
    }

    async fn stream_metadata(
        &self,
        stream: &StreamName,
    ) -> Result<Option<StreamMetadata>, MetadataError> {
        self.0.stream_metadata(stream).await
    }

    async fn set_stream_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<(), MetadataError> {
        self.0.set_stream_metadata(stream, metadata).await
    }

    async fn head_position(&self) -> Result<Option<Position>, ReadError> {
        self.retry(|| self.0.head_visible()).await
    }

    async fn subscribe_to_all(
        &self,
        from: SubscribeFrom,
        filter: EventFilter,
    ) -> Result<EventSubscription, ReadError> {
        self.0.subscribe_to_all(from, filter).await
    }

    async fn subscribe_to_stream(
        &self,
        stream: &StreamName,
        from: SubscribeStreamFrom,
    ) -> Result<EventSubscription, ReadError> {
        self.0.subscribe_to_stream(stream, from).await
    }
}

/// Snapshots live in the schema's `snapshots` table, written with the same commit
/// durability as events (the server's `synchronous_commit`).
#[async_trait]
impl SnapshotStore for PostgresStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), SnapshotError> {
        validate_state_type(&snapshot.state_type)?;
        let s = &self.shared().sql.schema;
        let conn = self.conn().await?;
        // Replaced only as foldstore_core::snapshot::should_replace says: another
        // schema version, or a revision at or after the stored one.
        conn.execute(
            &format!(
                "INSERT INTO {s}.snapshots \
                   (stream, state_type, schema_version, revision, data, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (stream, state_type) DO UPDATE SET \
                   schema_version = EXCLUDED.schema_version, revision = EXCLUDED.revision, \
                   data = EXCLUDED.data, recorded_at = EXCLUDED.recorded_at \
                 WHERE {s}.snapshots.schema_version <> EXCLUDED.schema_version \
                    OR EXCLUDED.revision >= {s}.snapshots.revision"
            ),
            &[
                &snapshot.stream.as_str(),
                &snapshot.state_type,
                &i64::from(snapshot.schema_version),
                &to_i64(snapshot.revision),
                &&snapshot.data[..],
                &snapshot.recorded_at,
            ],
        )
        .await
        .map_err(|e| backend(e, Effect::Unknown))?;
        Ok(())
    }

    async fn load_snapshot(
        &self,
        stream: &StreamName,
        state_type: &str,
    ) -> Result<Option<Snapshot>, SnapshotError> {
        validate_state_type(state_type)?;
        let s = &self.shared().sql.schema;
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                &format!(
                    "SELECT schema_version, revision, data, recorded_at FROM {s}.snapshots \
                     WHERE stream = $1 AND state_type = $2"
                ),
                &[&stream.as_str(), &state_type],
            )
            .await
            .map_err(|e| backend(e, Effect::None))?;
        let Some(row) = row else { return Ok(None) };
        let schema_version: i64 = row.try_get(0).map_err(incompatible)?;
        let revision: i64 = row.try_get(1).map_err(incompatible)?;
        let data: Vec<u8> = row.try_get(2).map_err(incompatible)?;
        Ok(Some(Snapshot {
            stream: stream.clone(),
            state_type: state_type.to_owned(),
            schema_version: u32::try_from(schema_version).map_err(|_| {
                BackendError::new(
                    BackendErrorKind::Incompatible,
                    format!("a stored snapshot has schema version {schema_version}"),
                )
            })?,
            revision: to_u64(revision, "snapshot revision")?,
            data: data.into(),
            recorded_at: row.try_get(3).map_err(incompatible)?,
        }))
    }
}
