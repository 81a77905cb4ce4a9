//! The read side: a small pool of read-only connections. Each read takes one
//! connection and runs on Tokio's blocking pool; WAL mode lets reads run beside the
//! writer and see only committed transactions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use foldstore_core::dcb::{Query, ReadQueryOptions};
use foldstore_core::rules::{StreamState, Visibility};
use foldstore_core::snapshot::Snapshot;
use foldstore_core::{
    BackendError, BackendErrorKind, Direction, JSON, Metadata, MetadataError, Position,
    ReadAllOptions, ReadError, ReadStreamOptions, RecordedEvent, StreamMetadata, StreamName,
};
use rusqlite::types::{Type, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::error::{backend, closed, incompatible};

/// One read connection and what it remembers.
pub(crate) struct ReadConn {
    conn: Connection,
    /// Stream names by id. Names never change once written, so this needs no
    /// invalidation; it is emptied when it grows past [`NAME_CACHE_LIMIT`].
    names: HashMap<i64, StreamName>,
}

const NAME_CACHE_LIMIT: usize = 100_000;

/// The pool.
pub(crate) struct Readers {
    conns: Mutex<Vec<ReadConn>>,
    permits: Arc<Semaphore>,
    size: u32,
}

impl Readers {
    pub(crate) fn new(conns: Vec<Connection>) -> Self {
        let size = conns.len();
        Self {
            conns: Mutex::new(
                conns
                    .into_iter()
                    .map(|conn| ReadConn {
                        conn,
                        names: HashMap::new(),
                    })
                    .collect(),
            ),
            permits: Arc::new(Semaphore::new(size)),
            size: u32::try_from(size).unwrap_or(u32::MAX),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ReadConn>> {
        // The vector is only pushed to and popped from: a panic cannot leave it torn.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a free connection, on the blocking pool when inside Tokio.
    pub(crate) async fn run<T, E, F>(self: &Arc<Self>, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<BackendError> + Send + 'static,
        F: FnOnce(&mut ReadConn) -> Result<T, E> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| E::from(closed()))?;
        let pool = Arc::clone(self);
        let job = move || {
            let _permit = permit;
            let Some(mut rc) = pool.lock().pop() else {
                return Err(E::from(BackendError::new(
                    BackendErrorKind::Internal,
                    "no read connection is left in the pool (an earlier read panicked)",
                )));
            };
            let result = f(&mut rc);
            pool.lock().push(rc);
            result
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => match handle.spawn_blocking(job).await {
                Ok(result) => result,
                Err(e) => Err(E::from(BackendError::new(
                    BackendErrorKind::Internal,
                    format!("a read failed on its thread: {e}"),
                ))),
            },
            // Outside Tokio there is no blocking pool: run here.
            Err(_) => job(),
        }
    }

    /// Waits for running reads, then closes every connection; later reads fail.
    pub(crate) async fn close(&self) {
        if let Ok(all) = self.permits.acquire_many(self.size).await {
            all.forget();
        }
        self.permits.close();
        self.lock().clear();
    }
}

/// The event columns, in the order [`decode`] reads them.
const EVENT_COLUMNS: &str = "e.position, e.stream_id, e.revision, e.id_hi, e.id_lo, \
     e.event_type, e.content_type, e.data, e.metadata, e.recorded_at, e.tags";

/// An event's tags from the `tags` column (a JSON array, NULL for none).
fn decode_tags(json: Option<&str>) -> rusqlite::Result<Vec<String>> {
    match json {
        None => Ok(Vec::new()),
        Some(j) => serde_json::from_str(j)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(10, Type::Text, Box::new(e))),
    }
}

fn decode(row: &Row<'_>, stream: StreamName) -> rusqlite::Result<RecordedEvent> {
    let position: i64 = row.get(0)?;
    let revision: i64 = row.get(2)?;
    let hi: i64 = row.get(3)?;
    let lo: i64 = row.get(4)?;
    let data = match row.get_ref(7)? {
        ValueRef::Blob(b) | ValueRef::Text(b) => Bytes::copy_from_slice(b),
        _ => Bytes::new(),
    };
    let content_type: Option<String> = row.get(6)?;
    let recorded_at: i64 = row.get(9)?;
    Ok(RecordedEvent {
        id: Uuid::from_u64_pair(hi as u64, lo as u64),
        stream,
        event_type: row.get(5)?,
        revision: u64::try_from(revision)
            .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(2, revision))?,
        position: Position::new(u128::from(
            u64::try_from(position)
                .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, position))?,
        )),
        data,
        content_type: content_type.unwrap_or_else(|| JSON.to_owned()),
        metadata: Metadata::from_trusted_str(row.get_ref(8)?.as_str()?),
        recorded_at: DateTime::from_timestamp_micros(recorded_at).unwrap_or_default(),
        tags: decode_tags(row.get::<_, Option<String>>(10)?.as_deref())?,
    })
}

fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> BackendError {
    move |e| backend(what, e)
}

/// A stream's row as readers see it.
struct StreamRow {
    id: i64,
    state: StreamState,
    metadata: Option<StreamMetadata>,
}

fn parse_metadata(json: Option<String>) -> Result<Option<StreamMetadata>, BackendError> {
    json.map(|j| {
        serde_json::from_str(&j)
            .map_err(|e| incompatible(format!("stored stream metadata does not parse: {e}")))
    })
    .transpose()
}

/// Loads the stream's row and last revision. `None`: the stream has no row.
fn load_stream(conn: &Connection, stream: &StreamName) -> Result<Option<StreamRow>, BackendError> {
    let row = conn
        .prepare_cached(
            "SELECT stream_id, deleted_before, tombstoned, metadata FROM streams WHERE name = ?1",
        )
        .and_then(|mut s| {
            s.query_row([stream.as_str()], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .optional()
        })
        .map_err(sql("reading a stream"))?;
    let Some((id, deleted_before, tombstoned, metadata)) = row else {
        return Ok(None);
    };
    let last: Option<i64> = conn
        .prepare_cached("SELECT max(revision) FROM events WHERE stream_id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)))
        .map_err(sql("reading a stream's revision"))?;
    let to_u64 = |v: i64| {
        u64::try_from(v).map_err(|_| incompatible(format!("negative revision {v} in the database")))
    };
    Ok(Some(StreamRow {
        id,
        state: StreamState {
            last_revision: last.map(to_u64).transpose()?,
            deleted_before: to_u64(deleted_before)?,
            tombstoned,
        },
        metadata: parse_metadata(metadata)?,
    }))
}

/// The smallest whole microsecond at or after `t`.
fn micros_ceil(t: DateTime<Utc>) -> i64 {
    let floor = t.timestamp_micros();
    if t.timestamp_subsec_nanos().is_multiple_of(1000) {
        floor
    } else {
        floor.saturating_add(1)
    }
}

fn clamp_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn limit_of(max_count: usize) -> i64 {
    i64::try_from(max_count).unwrap_or(i64::MAX)
}

pub(crate) fn read_stream(
    rc: &mut ReadConn,
    stream: &StreamName,
    options: &ReadStreamOptions,
) -> Result<Vec<RecordedEvent>, ReadError> {
    let conn = &rc.conn;
    // One snapshot for the stream's state and its events.
    let tx = conn
        .unchecked_transaction()
        .map_err(sql("starting a read"))?;
    let Some(row) = load_stream(&tx, stream)? else {
        return Err(ReadError::StreamNotFound {
            stream: stream.clone(),
        });
    };
    if row.state.tombstoned {
        return Err(ReadError::StreamTombstoned {
            stream: stream.clone(),
        });
    }
    if !row.state.exists() {
        return Err(ReadError::StreamNotFound {
            stream: stream.clone(),
        });
    }
    let vis = Visibility::of(&row.state, row.metadata.as_ref(), Utc::now());
    let min_revision = clamp_u64(vis.min_revision);
    let min_recorded = vis.min_recorded_at.map_or(i64::MIN, micros_ceil);
    let limit = limit_of(options.max_count);
    let (sql_text, bound) = match options.direction {
        Direction::Forwards => (
            "SELECT e.position, e.stream_id, e.revision, e.id_hi, e.id_lo, e.event_type, \
             e.content_type, e.data, e.metadata, e.recorded_at, e.tags FROM events e \
             WHERE e.stream_id = ?1 AND e.revision >= ?2 AND e.revision >= ?3 \
             AND e.recorded_at >= ?4 ORDER BY e.revision LIMIT ?5",
            options.from.map_or(0, clamp_u64),
        ),
        Direction::Backwards => (
            "SELECT e.position, e.stream_id, e.revision, e.id_hi, e.id_lo, e.event_type, \
             e.content_type, e.data, e.metadata, e.recorded_at, e.tags FROM events e \
             WHERE e.stream_id = ?1 AND e.revision <= ?2 AND e.revision >= ?3 \
             AND e.recorded_at >= ?4 ORDER BY e.revision DESC LIMIT ?5",
            options.from.map_or(i64::MAX, clamp_u64),
        ),
    };
    // Pre-size for the events the stream can have in range (a whole-stream read of
    // 10,000 events would otherwise regrow the vector a dozen times).
    let in_range = match (options.direction, row.state.last_revision) {
        (_, None) => 0,
        (Direction::Forwards, Some(last)) => {
            (last + 1).saturating_sub(options.from.unwrap_or(0).max(vis.min_revision))
        }
        (Direction::Backwards, Some(last)) => options
            .from
            .unwrap_or(last)
            .min(last)
            .saturating_add(1)
            .saturating_sub(vis.min_revision),
    };
    let capacity = usize::try_from(in_range)
        .unwrap_or(usize::MAX)
        .min(options.max_count)
        .min(100_000);
    let mut out = Vec::with_capacity(capacity);
    let mut stmt = tx
        .prepare_cached(sql_text)
        .map_err(sql("preparing a stream read"))?;
    let mut rows = stmt
        .query(params![row.id, bound, min_revision, min_recorded, limit])
        .map_err(sql("reading a stream"))?;
    while let Some(r) = rows.next().map_err(sql("reading a stream"))? {
        out.push(decode(r, stream.clone()).map_err(sql("decoding an event"))?);
    }
    Ok(out)
}

pub(crate) fn read_all(
    rc: &mut ReadConn,
    options: &ReadAllOptions,
) -> Result<Vec<RecordedEvent>, ReadError> {
    options.filter.validate()?;
    if options.max_count == 0 {
        return Ok(Vec::new());
    }
    let ReadConn { conn, names } = rc;
    let filter = &options.filter;
    let forwards = options.direction == Direction::Forwards;
    let from = match options.from {
        Some(p) => p.to_i64().unwrap_or(i64::MAX),
        None if forwards => 0,
        None => i64::MAX,
    };
    let mut values = vec![
        Value::Integer(from),
        Value::Integer(limit_of(options.max_count)),
    ];
    let category_id = match &filter.category {
        None => None,
        Some(c) => {
            let id: Option<i64> = conn
                .prepare_cached("SELECT category_id FROM categories WHERE name = ?1")
                .and_then(|mut s| s.query_row([c.as_str()], |r| r.get(0)).optional())
                .map_err(sql("reading a category"))?;
            match id {
                Some(id) => Some(id),
                None => return Ok(Vec::new()),
            }
        }
    };
    let mut q = String::with_capacity(512);
    q.push_str("SELECT ");
    q.push_str(EVENT_COLUMNS);
    q.push_str(" FROM events AS e");
    if category_id.is_some() {
        // The category index is ordered by position within a category: no sort, and
        // only the category's events are visited.
        q.push_str(" INDEXED BY events_by_category");
    }
    if filter.stream_prefix.is_some() || filter.consumer_group.is_some() {
        // CROSS JOIN keeps events as the outer loop, so rows come in position order.
        q.push_str(" CROSS JOIN streams AS s ON s.stream_id = e.stream_id");
    }
    q.push_str(if forwards {
        " WHERE e.position >= ?1"
    } else {
        " WHERE e.position <= ?1"
    });
    if let Some(id) = category_id {
        values.push(Value::Integer(id));
        q.push_str(&format!(" AND e.category_id = ?{}", values.len()));
    }
    if !filter.event_types.is_empty() {
        q.push_str(" AND e.event_type IN (");
        for (i, t) in filter.event_types.iter().enumerate() {
            values.push(Value::Text(t.clone()));
            if i > 0 {
                q.push_str(", ");
            }
            q.push_str(&format!("?{}", values.len()));
        }
        q.push(')');
    }
    if let Some(prefix) = &filter.stream_prefix {
        values.push(Value::Text(prefix.clone()));
        let n = values.len();
        q.push_str(&format!(" AND substr(s.name, 1, length(?{n})) = ?{n}"));
    }
    if let Some(g) = filter.consumer_group {
        values.push(Value::Integer(i64::from(g.size)));
        values.push(Value::Integer(i64::from(g.member)));
        let n = values.len();
        q.push_str(&format!(" AND s.group_hash % ?{} = ?{n}", n - 1));
    }
    q.push_str(if forwards {
        " ORDER BY e.position LIMIT ?2"
    } else {
        " ORDER BY e.position DESC LIMIT ?2"
    });
    let mut stmt = conn
        .prepare_cached(&q)
        .map_err(sql("preparing a read of $all"))?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(values))
        .map_err(sql("reading $all"))?;
    Ok(collect(conn, names, &mut rows, options.max_count)?)
}

/// Decodes event rows selected with [`EVENT_COLUMNS`], resolving stream names through
/// the connection's name cache.
fn collect(
    conn: &Connection,
    names: &mut HashMap<i64, StreamName>,
    rows: &mut rusqlite::Rows<'_>,
    expected: usize,
) -> Result<Vec<RecordedEvent>, BackendError> {
    let mut out = Vec::with_capacity(expected.min(1024));
    if names.len() > NAME_CACHE_LIMIT {
        names.clear();
    }
    while let Some(r) = rows.next().map_err(sql("reading events"))? {
        let stream_id: i64 = r.get(1).map_err(sql("decoding an event"))?;
        let stream = match names.get(&stream_id) {
            Some(name) => name.clone(),
            None => {
                let name: String = conn
                    .prepare_cached("SELECT name FROM streams WHERE stream_id = ?1")
                    .and_then(|mut s| s.query_row([stream_id], |r| r.get(0)))
                    .map_err(sql("reading a stream name"))?;
                let name = StreamName::new(name).map_err(|e| {
                    incompatible(format!("invalid stream name in the database: {e}"))
                })?;
                names.insert(stream_id, name.clone());
                name
            }
        };
        out.push(decode(r, stream).map_err(sql("decoding an event"))?);
    }
    Ok(out)
}

/// A Dynamic Consistency Boundary read: the events matching `query` after
/// `options.after`, in position order, through the tag and type indexes (see
/// [`crate::query`]); a query matching everything is a range read of the log.
pub(crate) fn read_query(
    rc: &mut ReadConn,
    query: &Query,
    options: &ReadQueryOptions,
) -> Result<Vec<RecordedEvent>, ReadError> {
    let limit = options.limit.unwrap_or(usize::MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let ReadConn { conn, names } = rc;
    let after = options.after.map_or(0, |p| p.to_i64().unwrap_or(i64::MAX));
    let mut values = Vec::new();
    let q = match crate::query::positions(query, after, false, &mut values) {
        None => {
            values.push(Value::Integer(after));
            format!("SELECT {EVENT_COLUMNS} FROM events AS e WHERE e.position > ?1")
        }
        Some(union) => {
            format!("SELECT {EVENT_COLUMNS} FROM events AS e WHERE e.position IN ({union})")
        }
    };
    values.push(Value::Integer(limit_of(limit)));
    let q = format!("{q} ORDER BY e.position LIMIT ?{}", values.len());
    let mut stmt = conn
        .prepare_cached(&q)
        .map_err(sql("preparing a query read"))?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(values))
        .map_err(sql("reading a query"))?;
    Ok(collect(conn, names, &mut rows, limit)?)
}

/// The stored snapshot of `stream` and `state_type`, if any.
pub(crate) fn load_snapshot(
    rc: &mut ReadConn,
    stream: &StreamName,
    state_type: &str,
) -> Result<Option<Snapshot>, BackendError> {
    let row = rc
        .conn
        .prepare_cached(
            "SELECT schema_version, revision, data, recorded_at FROM snapshots \
             WHERE stream = ?1 AND state_type = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![stream.as_str(), state_type], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()
        })
        .map_err(sql("reading a snapshot"))?;
    let Some((schema_version, revision, data, recorded_at)) = row else {
        return Ok(None);
    };
    Ok(Some(Snapshot {
        stream: stream.clone(),
        state_type: state_type.to_owned(),
        schema_version: u32::try_from(schema_version)
            .map_err(|_| incompatible(format!("snapshot schema version {schema_version}")))?,
        revision: u64::try_from(revision)
            .map_err(|_| incompatible(format!("negative snapshot revision {revision}")))?,
        data: Bytes::from(data),
        recorded_at: DateTime::from_timestamp_micros(recorded_at).unwrap_or_default(),
    }))
}

pub(crate) fn stream_metadata(
    rc: &mut ReadConn,
    stream: &StreamName,
) -> Result<Option<StreamMetadata>, MetadataError> {
    let row = rc
        .conn
        .prepare_cached("SELECT tombstoned, metadata FROM streams WHERE name = ?1")
        .and_then(|mut s| {
            s.query_row([stream.as_str()], |r| {
                Ok((r.get::<_, bool>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .optional()
        })
        .map_err(sql("reading stream metadata"))?;
    match row {
        None => Ok(None),
        Some((true, _)) => Err(MetadataError::StreamTombstoned {
            stream: stream.clone(),
        }),
        Some((false, json)) => Ok(parse_metadata(json)?),
    }
}

/// The position stored for tracking `source` (see `writer::tracked`, which reads it
/// inside the writer's transaction).
pub(crate) fn tracking(rc: &mut ReadConn, source: &str) -> Result<Option<Position>, ReadError> {
    Ok(crate::writer::tracked(&rc.conn, source)?)
}

/// Streams with at least one event whose names start with `prefix`, in byte order
/// (SQLite's BINARY collation compares UTF-8 bytes, as Rust's `str` does), after
/// `after`; from the `streams` table and its unique index on `name`.
pub(crate) fn list_streams(
    rc: &mut ReadConn,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<StreamName>, ReadError> {
    let mut stmt = rc
        .conn
        .prepare_cached(
            "SELECT name FROM streams s
             WHERE name >= ?1 AND substr(name, 1, length(?1)) = ?1 AND name > ?2
               AND EXISTS (SELECT 1 FROM events e WHERE e.stream_id = s.stream_id)
             ORDER BY name LIMIT ?3",
        )
        .map_err(sql("listing streams"))?;
    let rows = stmt
        .query_map(params![prefix, after.unwrap_or(""), limit_of(limit)], |r| {
            r.get::<_, String>(0)
        })
        .map_err(sql("listing streams"))?;
    let mut names = Vec::new();
    for row in rows {
        let name = row.map_err(sql("listing streams"))?;
        let name = StreamName::new(name).map_err(|e| {
            BackendError::new(
                BackendErrorKind::Internal,
                format!("a stored stream name is invalid: {e}"),
            )
        })?;
        names.push(name);
    }
    Ok(names)
}
