//! The fast path of a group commit: every plain append of a batch (a transaction of one
//! part, without a condition or tracking) in a few `append_batch` calls (schema version
//! 3, with the first sequence number since version 4) instead of one
//! `append_transaction` call each.
//!
//! ```text
//! BEGIN; SELECT lock_keys(...); SELECT * FROM append_batch(<layer 1>); ...; COMMIT
//! ```
//!
//! A layer holds at most one append per stream (`append_batch` needs distinct names):
//! the first append of each stream goes into layer 1, the second into layer 2, and so
//! on; the layers run in order in the same transaction, so a later append to a stream
//! sees the earlier one's revision. `append_batch` writes an append or leaves it
//! unwritten (a stored id, a tombstone, an expectation that does not hold); the
//! unwritten ones, and every append of a batch whose transaction failed, go on to the
//! slow path in [`crate::writer`], which runs `append_transaction` per request and
//! learns from the facts it returns whether an append is a retry, a refusal or, as the
//! stream changed in between, a success after all. Every other request goes to the
//! slow path directly.

use foldstore_core::transaction::{StreamAppend, StreamRevision, TransactionResult};
use foldstore_core::{BackendError, BackendErrorKind, group_hash};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};
use uuid::Uuid;

use crate::error::Effect;
use crate::pg::{Xid8, position, to_i64, to_u64};
use crate::pipeline::{self, NotCommitted, Sent, Step};
use crate::writer::{Request, expectation, joined};

/// Statements of a batch before its first `append_batch`: `BEGIN` and `lock_keys`.
const STEPS_BEFORE_LAYERS: usize = 2;

/// How an attempt at the fast path ended.
pub(crate) enum FastAttempt {
    /// Committed. Per request, in order: its result when written, `None` when
    /// `append_batch` left it unwritten.
    Committed(Vec<Option<TransactionResult>>),
    /// The transaction rolled back on an SQL error (a concurrent append committed one
    /// of the ids, a deadlock, a timeout): nothing was written.
    RolledBack(tokio_postgres::Error),
    /// The connection failed; `effect` says whether the batch may have committed.
    Lost {
        /// What the driver said.
        error: tokio_postgres::Error,
        /// Whether the transaction may have committed.
        effect: Effect,
    },
    /// A row could not be decoded.
    Broken(BackendError),
}

/// Whether `request` may take the fast path: one part with events, no condition, no
/// tracking.
pub(crate) fn fits(request: &Request) -> bool {
    let tx = &request.transaction;
    tx.condition.is_none()
        && tx.tracking.is_none()
        && request.single().is_some_and(|p| !p.events.is_empty())
}

/// The one part of a request that [`fits`].
fn part(request: &Request) -> &StreamAppend {
    &request.transaction.parts[0]
}

/// The per-stream and per-event column arrays that the `append_batch` and
/// `append_transaction` SQL functions both take: one row per stream part, one per
/// event, each event naming its part by number (1-based).
#[derive(Default)]
pub(crate) struct EventColumns<'a> {
    streams: Vec<&'a str>,
    categories: Vec<&'a str>,
    group_hashes: Vec<i64>,
    category_hashes: Vec<i64>,
    kinds: Vec<i16>,
    revisions: Vec<i64>,
    counts: Vec<i32>,
    event_parts: Vec<i32>,
    event_offsets: Vec<i32>,
    ids: Vec<Uuid>,
    types: Vec<&'a str>,
    content_types: Vec<&'a str>,
    datas: Vec<&'a [u8]>,
    metadatas: Vec<&'a str>,
    tags: Vec<Option<String>>,
}

impl<'a> EventColumns<'a> {
    /// Adds `part` as part number `number` (1-based).
    pub(crate) fn push(&mut self, number: i32, part: &'a StreamAppend) {
        let (kind, revision) = expectation(part.expected);
        self.streams.push(part.stream.as_str());
        self.categories.push(part.stream.category());
        self.group_hashes.push(to_i64(group_hash(part.stream.id())));
        self.category_hashes
            .push(to_i64(group_hash(part.stream.category())));
        self.kinds.push(kind);
        self.revisions.push(revision);
        self.counts
            .push(i32::try_from(part.events.len()).unwrap_or(i32::MAX));
        for (offset, event) in part.events.iter().enumerate() {
            self.event_parts.push(number);
            self.event_offsets
                .push(i32::try_from(offset).unwrap_or(i32::MAX));
            self.ids.push(event.id);
            self.types.push(event.event_type.as_str());
            self.content_types.push(event.content_type.as_str());
            self.datas.push(event.data.as_ref());
            self.metadatas.push(event.metadata.as_str());
            self.tags.push(joined(&event.tags));
        }
    }

    /// The columns as SQL parameters, in the functions' order.
    pub(crate) fn refs(&self) -> [&(dyn ToSql + Sync); 15] {
        [
            &self.streams,
            &self.categories,
            &self.group_hashes,
            &self.category_hashes,
            &self.kinds,
            &self.revisions,
            &self.counts,
            &self.event_parts,
            &self.event_offsets,
            &self.ids,
            &self.types,
            &self.content_types,
            &self.datas,
            &self.metadatas,
            &self.tags,
        ]
    }
}

/// The arguments of one `append_batch` call.
#[derive(Default)]
struct Layer<'a> {
    /// Index in the batch of each of the layer's appends.
    members: Vec<usize>,
    columns: EventColumns<'a>,
}

impl<'a> Layer<'a> {
    fn push(&mut self, index: usize, request: &'a Request) {
        self.members.push(index);
        let append = i32::try_from(self.members.len()).unwrap_or(i32::MAX);
        self.columns.push(append, part(request));
    }
}

/// Splits `pending` (sorted by stream) into layers with one append per stream each.
fn layers(pending: &[Request]) -> Vec<Layer<'_>> {
    let mut layers: Vec<Layer<'_>> = Vec::new();
    let mut depth = 0;
    for (index, request) in pending.iter().enumerate() {
        depth = match index.checked_sub(1).map(|i| &pending[i]) {
            Some(previous) if part(previous).stream == part(request).stream => depth + 1,
            _ => 0,
        };
        if layers.len() <= depth {
            layers.push(Layer::default());
        }
        layers[depth].push(index, request);
    }
    layers
}

/// Runs `pending` (every one [`fits`], sorted by stream) through `append_batch` in one
/// transaction, after `lock` took the batch's advisory locks (`keys`, `exclusive`).
pub(crate) async fn attempt(
    conn: &deadpool_postgres::Object,
    stmt: &Statement,
    lock: &Statement,
    (keys, exclusive): (&Vec<i64>, &Vec<bool>),
    pending: &[Request],
    test_commit_delay: Option<std::time::Duration>,
) -> FastAttempt {
    let delay = test_commit_delay;
    let layers = layers(pending);
    let mut steps: Vec<Step<'_, Vec<Row>>> = Vec::with_capacity(layers.len() + 1);
    steps.push(Box::pin(async move {
        conn.execute(lock, &[keys, exclusive])
            .await
            .map(|_| Vec::new())
    }));
    for layer in &layers {
        steps.push(Box::pin(async move {
            conn.query(stmt, &layer.columns.refs()).await
        }));
    }
    let (outputs, commit) = match pipeline::send(conn, steps, delay).await {
        Sent::Ran { outputs, commit } => (outputs, commit),
        Sent::Lost { error, effect } => return FastAttempt::Lost { error, effect },
        Sent::Failed { error, .. } => return FastAttempt::RolledBack(error),
    };

    let mut outcomes: Vec<Option<TransactionResult>> = pending.iter().map(|_| None).collect();
    for (layer, rows) in layers
        .iter()
        .zip(outputs.into_iter().skip(STEPS_BEFORE_LAYERS))
    {
        if rows.len() != layer.members.len() {
            let e = BackendError::new(
                BackendErrorKind::Incompatible,
                format!(
                    "append_batch returned {} rows for {} appends; is the schema from another foldstore version?",
                    rows.len(),
                    layer.members.len()
                ),
            );
            return FastAttempt::Broken(pipeline::unreadable(conn, delay, e).await);
        }
        for (&index, row) in layer.members.iter().zip(&rows) {
            match decide(&pending[index], row) {
                Ok(outcome) => outcomes[index] = outcome,
                Err(e) => return FastAttempt::Broken(pipeline::unreadable(conn, delay, e).await),
            }
        }
    }

    match pipeline::finish(conn, commit, delay).await {
        Ok(()) => FastAttempt::Committed(outcomes),
        Err(NotCommitted::Conflict(error)) => FastAttempt::RolledBack(error),
        Err(NotCommitted::Lost(error)) => FastAttempt::Lost {
            error,
            effect: Effect::Unknown,
        },
    }
}

fn decode(e: tokio_postgres::Error) -> BackendError {
    BackendError::new(
        BackendErrorKind::Incompatible,
        "append_batch returned an unexpected row; is the schema from another foldstore version?",
    )
    .with_source(e)
}

/// `append_batch`'s row for `request`: its result when written.
fn decide(request: &Request, row: &Row) -> Result<Option<TransactionResult>, BackendError> {
    let written: bool = row.try_get(0).map_err(decode)?;
    if !written {
        return Ok(None);
    }
    let first: i64 = row.try_get(1).map_err(decode)?;
    let tx: Xid8 = row.try_get(2).map_err(decode)?;
    let first_seq: i64 = row.try_get(3).map_err(decode)?;
    let last_seq: i64 = row.try_get(4).map_err(decode)?;
    let part = part(request);
    let n = part.events.len() as u64;
    Ok(Some(TransactionResult {
        streams: vec![StreamRevision {
            stream: part.stream.clone(),
            next_expected_revision: to_u64(first, "revision")? + n - 1,
        }],
        first_position: Some(position(tx, first_seq)),
        last_position: Some(position(tx, last_seq)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use foldstore_core::transaction::AppendTransaction;
    use foldstore_core::{ExpectedRevision, NewEvent, StreamName};
    use tokio::sync::oneshot;

    fn request(stream: &str, events: usize) -> Request {
        let (reply, _) = oneshot::channel();
        Request {
            transaction: AppendTransaction::single(
                StreamName::new(stream).unwrap(),
                ExpectedRevision::Any,
                (0..events)
                    .map(|_| NewEvent::raw("E", &b"{}"[..], foldstore_core::JSON))
                    .collect(),
                None,
            ),
            reply,
            races: 0,
        }
    }

    #[test]
    fn layers_hold_one_append_per_stream_in_batch_order() {
        let pending = vec![
            request("a-1", 2),
            request("a-1", 1),
            request("a-1", 1),
            request("b-1", 3),
            request("c-1", 1),
            request("c-1", 1),
        ];
        let layers = layers(&pending);
        let members: Vec<Vec<usize>> = layers.iter().map(|l| l.members.clone()).collect();
        assert_eq!(members, vec![vec![0, 3, 4], vec![1, 5], vec![2]]);
        // Events carry their append's 1-based index within the layer and their offset.
        assert_eq!(layers[0].columns.event_parts, vec![1, 1, 2, 2, 2, 3]);
        assert_eq!(layers[0].columns.event_offsets, vec![0, 1, 0, 1, 2, 0]);
        assert_eq!(layers[0].columns.streams, vec!["a-1", "b-1", "c-1"]);
        assert_eq!(layers[1].columns.event_parts, vec![1, 2]);
    }
}
