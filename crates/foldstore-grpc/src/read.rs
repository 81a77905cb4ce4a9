//! `Streams.Read`: reads of a stream or of `$all`, and catch-up subscriptions.
//!
//! Each response is produced inside its own stream ([`crate::feed`]), polled only when
//! the connection can send, so a client that reads slowly makes the read wait: a read
//! pages through the store only as fast as the client takes its events, and a
//! subscription pulls from the core's subscription (which reads pages of the store
//! after the last event it delivered), so a subscriber that falls behind the live tail
//! simply reads from the store again and catches up by itself. Nothing is buffered
//! without bound, and nobody is dropped as too slow.

use std::pin::Pin;
use std::sync::Arc;

use foldstore_core::{
    Direction, EventFilter, EventStore, Position, ReadAllOptions, ReadError, ReadStreamOptions,
    RecordedEvent, StreamName, SubscribeFrom, SubscribeStreamFrom,
};
use futures::{Stream, StreamExt};
use tonic::Status;

use crate::auth::{Caller, Need, Reach};
use crate::error::{self, invalid_argument};
use crate::feed::{Feed, feed};
use crate::filter::Filter;
use crate::metastream;
use crate::proto::event_store::client::streams::ReadResp;
use crate::proto::event_store::client::streams::read_req::Options;
use crate::proto::event_store::client::streams::read_req::options::{
    CountOption, FilterOption, ReadDirection, StreamOption, all_options, stream_options,
    uuid_option,
};
use crate::proto::event_store::client::streams::read_resp::{self, Content};
use crate::wire;

/// The messages of one read response.
pub(crate) type ReadStream = Pin<Box<dyn Stream<Item = Result<ReadResp, Status>> + Send>>;

/// Events read from the store per page.
const PAGE: usize = 512;

type Tx = Feed<Result<ReadResp, Status>>;

/// Answers a read request: checks the options, then streams the response.
pub(crate) async fn read(
    store: Arc<dyn EventStore>,
    options: Options,
    caller: Caller,
) -> Result<ReadStream, Status> {
    let structured = matches!(
        options.uuid_option.and_then(|u| u.content),
        Some(uuid_option::Content::Structured(_))
    );
    let backwards = options.read_direction == ReadDirection::Backwards as i32;
    let filter = match options.filter_option {
        Some(FilterOption::Filter(f)) => Some(Filter::new(f)?),
        _ => None,
    };
    let out = Out { structured };
    match (options.stream_option, options.count_option) {
        (Some(StreamOption::Stream(s)), Some(CountOption::Count(count))) => {
            if filter.is_some() {
                return Err(invalid_argument(
                    "filters apply to $all only: read $all with a stream-name filter",
                ));
            }
            if let Some(stream) = metastream::target(s.stream_identifier.as_ref())? {
                caller.check(Need::Read, Some(&stream))?;
                let answer = match metastream::read(&*store, &stream, structured).await? {
                    Some(event) if count > 0 => Content::Event(event),
                    Some(_) => return Ok(empty()),
                    None => Content::StreamNotFound(read_resp::StreamNotFound {
                        stream_identifier: Some(metastream::identifier(&stream)),
                    }),
                };
                return Ok(Box::pin(futures::stream::once(async move {
                    Ok(content(answer))
                })));
            }
            let stream = wire::readable_stream_name(s.stream_identifier.as_ref())?;
            caller.check(Need::Read, Some(&stream))?;
            let from = match s.revision_option {
                Some(stream_options::RevisionOption::Revision(r)) => Some(r),
                Some(stream_options::RevisionOption::End(_)) if !backwards => return Ok(empty()),
                Some(stream_options::RevisionOption::Start(_)) | None if backwards => Some(0),
                _ => None,
            };
            Ok(respond(move |tx| {
                read_stream(tx, store, stream, from, backwards, count, out)
            }))
        }
        (Some(StreamOption::All(a)), Some(CountOption::Count(count))) => {
            caller.check(Need::Read, None)?;
            let reach = caller.reach();
            let from = match a.all_option {
                Some(all_options::AllOption::Position(p)) => {
                    let p = wire::store_position(&*store, p.commit_position, p.prepare_position)
                        .await?;
                    // Forwards from a position includes it; backwards, it is where the
                    // previous read stopped, so it is excluded.
                    match (backwards, p) {
                        (false, p) => Some(p),
                        (true, Position::ZERO) => return Ok(empty()),
                        (true, p) => Some(p.prev()),
                    }
                }
                Some(all_options::AllOption::End(_)) if !backwards => return Ok(empty()),
                Some(all_options::AllOption::Start(_)) | None if backwards => {
                    return Ok(empty());
                }
                _ => None,
            };
            Ok(respond(move |tx| {
                read_all(tx, store, from, backwards, count, (filter, reach), out)
            }))
        }
        (Some(StreamOption::Stream(s)), Some(CountOption::Subscription(_))) => {
            if backwards || filter.is_some() {
                return Err(invalid_argument(
                    "a stream subscription reads forwards without a filter",
                ));
            }
            let stream = wire::readable_stream_name(s.stream_identifier.as_ref())?;
            caller.check(Need::Read, Some(&stream))?;
            let from = match s.revision_option {
                Some(stream_options::RevisionOption::Revision(r)) => SubscribeStreamFrom::After(r),
                Some(stream_options::RevisionOption::End(_)) => SubscribeStreamFrom::End,
                _ => SubscribeStreamFrom::Start,
            };
            Ok(respond(move |tx| {
                subscribe_stream(tx, store, stream, from, out)
            }))
        }
        (Some(StreamOption::All(a)), Some(CountOption::Subscription(_))) => {
            if backwards {
                return Err(invalid_argument("a subscription reads forwards"));
            }
            caller.check(Need::Read, None)?;
            let reach = caller.reach();
            let from = match a.all_option {
                Some(all_options::AllOption::Position(p)) => SubscribeFrom::After(
                    wire::store_position(&*store, p.commit_position, p.prepare_position).await?,
                ),
                Some(all_options::AllOption::End(_)) => SubscribeFrom::End,
                _ => SubscribeFrom::Start,
            };
            Ok(respond(move |tx| {
                subscribe_all(tx, store, from, (filter, reach), out)
            }))
        }
        _ => Err(invalid_argument(
            "a read names a stream or $all, and a count or a subscription",
        )),
    }
}

/// How events are written for this request.
#[derive(Debug, Clone, Copy)]
struct Out {
    structured: bool,
}

impl Out {
    fn event(self, event: RecordedEvent) -> ReadResp {
        content(Content::Event(wire::read_event(event, self.structured)))
    }
}

fn content(content: Content) -> ReadResp {
    ReadResp {
        content: Some(content),
    }
}

fn empty() -> ReadStream {
    Box::pin(futures::stream::empty())
}

/// The response `produce` sends.
fn respond<F, Fut>(produce: F) -> ReadStream
where
    F: FnOnce(Tx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    Box::pin(feed(produce))
}

async fn read_stream(
    tx: Tx,
    store: Arc<dyn EventStore>,
    stream: StreamName,
    mut from: Option<u64>,
    backwards: bool,
    mut remaining: u64,
    out: Out,
) {
    let direction = if backwards {
        Direction::Backwards
    } else {
        Direction::Forwards
    };
    let mut first = true;
    while remaining > 0 {
        let page = usize::try_from(remaining).unwrap_or(usize::MAX).min(PAGE);
        let options = ReadStreamOptions {
            from,
            direction,
            max_count: page,
        };
        let events = match store.read_stream(&stream, options).await {
            Ok(events) => events,
            Err(ReadError::StreamNotFound { .. }) => {
                if first {
                    let not_found = read_resp::StreamNotFound {
                        stream_identifier: Some(wire::stream_identifier(&stream)),
                    };
                    tx.send(Ok(content(Content::StreamNotFound(not_found))))
                        .await;
                }
                return;
            }
            Err(e) => {
                tx.send(Err(error::read(e))).await;
                return;
            }
        };
        first = false;
        let Some(last) = events.last().map(|e| e.revision) else {
            return;
        };
        let full = events.len() == page;
        remaining -= events.len() as u64;
        for event in events {
            tx.send(Ok(out.event(event))).await;
        }
        from = match (full, backwards) {
            (false, _) => return,
            (true, false) => Some(last + 1),
            (true, true) => match last.checked_sub(1) {
                Some(r) => Some(r),
                None => return,
            },
        };
    }
}

async fn read_all(
    tx: Tx,
    store: Arc<dyn EventStore>,
    mut from: Option<Position>,
    backwards: bool,
    mut remaining: u64,
    (filter, reach): (Option<Filter>, Reach),
    out: Out,
) {
    let direction = if backwards {
        Direction::Backwards
    } else {
        Direction::Forwards
    };
    while remaining > 0 {
        let page = match filter {
            None if reach.is_everything() => {
                usize::try_from(remaining).unwrap_or(usize::MAX).min(PAGE)
            }
            _ => PAGE,
        };
        let options = ReadAllOptions {
            from,
            direction,
            max_count: page,
            filter: EventFilter::all(),
        };
        let events = match store.read_all(options).await {
            Ok(events) => events,
            Err(e) => {
                tx.send(Err(error::read(e))).await;
                return;
            }
        };
        let Some(last) = events.last().map(|e| e.position) else {
            return;
        };
        let full = events.len() == page;
        for event in events {
            if reach.allows(event.stream.as_str())
                && filter.as_ref().is_none_or(|f| f.matches(&event))
            {
                tx.send(Ok(out.event(event))).await;
                remaining -= 1;
                if remaining == 0 {
                    return;
                }
            }
        }
        from = match (full, backwards) {
            (false, _) => return,
            (true, false) => Some(last.next()),
            (true, true) if last == Position::ZERO => return,
            (true, true) => Some(last.prev()),
        };
    }
}

fn confirmation() -> ReadResp {
    content(Content::Confirmation(read_resp::SubscriptionConfirmation {
        subscription_id: uuid::Uuid::new_v4().to_string(),
    }))
}

fn caught_up(stream_revision: Option<u64>, position: Option<Position>) -> ReadResp {
    content(Content::CaughtUp(read_resp::CaughtUp {
        timestamp: Some(wire::timestamp(chrono::Utc::now())),
        stream_revision: stream_revision.and_then(|r| i64::try_from(r).ok()),
        position: position.map(|p| {
            let (commit_position, prepare_position) = wire::wire_position(p);
            read_resp::Position {
                commit_position,
                prepare_position,
            }
        }),
    }))
}

async fn subscribe_stream(
    tx: Tx,
    store: Arc<dyn EventStore>,
    stream: StreamName,
    from: SubscribeStreamFrom,
    out: Out,
) {
    tx.send(Ok(confirmation())).await;
    // The stream's last revision now: once it is delivered, the subscription is live.
    let target = match from {
        SubscribeStreamFrom::End => None,
        _ => match store
            .read_stream(&stream, ReadStreamOptions::backwards().max_count(1))
            .await
        {
            Ok(events) => events.first().map(|e| e.revision),
            Err(ReadError::StreamNotFound { .. }) => None,
            Err(e) => {
                tx.send(Err(error::read(e))).await;
                return;
            }
        },
    };
    let mut live = match (from, target) {
        (SubscribeStreamFrom::After(after), Some(target)) => after >= target,
        (SubscribeStreamFrom::Start, Some(_)) => false,
        _ => true,
    };
    let mut events = match store.subscribe_to_stream(&stream, from).await {
        Ok(events) => events,
        Err(e) => {
            tx.send(Err(error::read(e))).await;
            return;
        }
    };
    if live {
        tx.send(Ok(caught_up(target, None))).await;
    }
    loop {
        let next = events.next().await;
        let event = match next {
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                tx.send(Err(error::subscription(e))).await;
                return;
            }
            None => return,
        };
        let revision = event.revision;
        tx.send(Ok(out.event(event))).await;
        if !live && target.is_some_and(|t| revision >= t) {
            live = true;
            tx.send(Ok(caught_up(Some(revision), None))).await;
        }
    }
}

async fn subscribe_all(
    tx: Tx,
    store: Arc<dyn EventStore>,
    from: SubscribeFrom,
    (filter, reach): (Option<Filter>, Reach),
    out: Out,
) {
    tx.send(Ok(confirmation())).await;
    // The head now: once the subscription has scanned it, it is live.
    let head = match from {
        SubscribeFrom::End => None,
        _ => match store.head_position().await {
            Ok(head) => head,
            Err(e) => {
                tx.send(Err(error::read(e))).await;
                return;
            }
        },
    };
    let mut live = match (from, head) {
        (SubscribeFrom::After(after), Some(head)) => after >= head,
        (SubscribeFrom::Start, Some(_)) => false,
        _ => true,
    };
    // Our filters cannot express regexes: scan everything and filter here, which also
    // counts the scanned events for checkpoints.
    let mut events = match store.subscribe_to_all(from, EventFilter::all()).await {
        Ok(events) => events,
        Err(e) => {
            tx.send(Err(error::read(e))).await;
            return;
        }
    };
    if live {
        tx.send(Ok(caught_up(None, head))).await;
    }
    let mut scanned: u64 = 0;
    loop {
        let next = events.next().await;
        let event = match next {
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                tx.send(Err(error::subscription(e))).await;
                return;
            }
            None => return,
        };
        let position = event.position;
        if reach.allows(event.stream.as_str()) && filter.as_ref().is_none_or(|f| f.matches(&event))
        {
            tx.send(Ok(out.event(event))).await;
        }
        if let Some(filter) = &filter {
            scanned += 1;
            if scanned >= filter.checkpoint_interval {
                scanned = 0;
                let (commit_position, prepare_position) = wire::wire_position(position);
                let checkpoint = read_resp::Checkpoint {
                    commit_position,
                    prepare_position,
                    timestamp: Some(wire::timestamp(chrono::Utc::now())),
                };
                tx.send(Ok(content(Content::Checkpoint(checkpoint)))).await;
            }
        }
        if !live && head.is_some_and(|h| position >= h) {
            live = true;
            tx.send(Ok(caught_up(None, Some(position)))).await;
        }
    }
}
