//! `PersistentSubscriptions.Read`: one consumer of a group, over one bidirectional call.
//!
//! The client sends its options (stream or `$all`, group, buffer size, id form), then
//! acks and nacks; we answer a confirmation (`<stream or $all>::<group>`), then the
//! events the group hands this consumer, each with its retry count. Acks and nacks name
//! events by id, as the clients send them: the call remembers which of the core's
//! event keys each id it delivered stands for, until acked or nacked (the
//! [`REMEMBERED`] latest, so that a client that never answers cannot grow it without
//! bound; an ack of a forgotten id is ignored and the event times out and comes
//! again). A nack's action `Unknown` retries.
//!
//! The call ends when the client stops sending (or goes), and with
//! `persistent-subscription-dropped` when the group drops the consumer: the group was
//! deleted or updated, the subsystem restarted, or the consumer nacked with `Stop`.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;

use foldstore_core::persistent::{
    Consumer, EventKey, NackAction, PersistentEvent, PersistentSubscriptions, Target,
};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::auth::{Caller, Need};
use crate::error::{self, invalid_argument};
use crate::persistent::Names;
use crate::proto::event_store::client::Uuid as WireUuid;
use crate::proto::event_store::client::persistent_subscriptions::read_req::nack::Action;
use crate::proto::event_store::client::persistent_subscriptions::read_req::options::StreamOption;
use crate::proto::event_store::client::persistent_subscriptions::read_resp::{self, read_event};
use crate::proto::event_store::client::persistent_subscriptions::{ReadReq, ReadResp, read_req};
use crate::proto::event_store::client::streams::read_req::options::uuid_option;
use crate::wire;

/// The messages of one consumer's call.
pub(crate) type ReadStream = Pin<Box<dyn Stream<Item = Result<ReadResp, Status>> + Send>>;

/// Messages waiting for a client that reads slowly (the group sends a consumer no more
/// than its buffer size before it acks).
const CHANNEL: usize = 64;

type Tx = mpsc::Sender<Result<ReadResp, Status>>;

/// How many delivered, unanswered event ids a call remembers at most.
const REMEMBERED: usize = 65_536;

/// Answers a consumer's call: reads its options, connects it to the group and streams
/// the group's events to it while taking its acks and nacks.
pub(crate) async fn read(
    subs: Arc<PersistentSubscriptions>,
    caller: Caller,
    names: Names,
    connection_name: String,
    mut requests: Streaming<ReadReq>,
) -> Result<ReadStream, Status> {
    let Some(read_req::Content::Options(options)) =
        requests.message().await?.and_then(|m| m.content)
    else {
        return Err(invalid_argument(
            "a persistent subscription's call starts with its options (stream or $all, group, buffer size)",
        ));
    };
    let target = match &options.stream_option {
        Some(StreamOption::StreamIdentifier(id)) => Target::Stream(wire::stream_name(Some(id))?),
        Some(StreamOption::All(_)) => Target::All,
        None => {
            return Err(invalid_argument(
                "a persistent subscription's options name a stream or $all",
            ));
        }
    };
    consume_check(&caller, &target)?;
    let structured = matches!(
        options.uuid_option.and_then(|u| u.content),
        Some(uuid_option::Content::Structured(_))
    );
    let group = options.group_name;
    // 0 (or less): the group's consumer buffer size.
    let buffer = usize::try_from(options.buffer_size).unwrap_or(0);
    let consumer = subs
        .connect(&target, &group, buffer)
        .await
        .map_err(error::persistent)?;
    let name = names.register(consumer.id(), connection_name);
    let (tx, rx) = mpsc::channel(CHANNEL);
    let call = Call {
        consumer,
        target,
        group,
        structured,
        delivered: HashMap::new(),
        order: VecDeque::new(),
    };
    tokio::spawn(async move {
        call.serve(requests, tx).await;
        drop(name);
    });
    Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|message| (message, rx))
    })))
}

/// Refuses a consumer the caller may not be: it needs read, and reach of the stream.
/// On `$all`, a caller limited to stream prefixes is refused: its events could not be
/// held back from it without leaving them unacked in the group.
pub(crate) fn consume_check(caller: &Caller, target: &Target) -> Result<(), Status> {
    match target {
        Target::Stream(stream) => caller.check(Need::Read, Some(stream)),
        Target::All => {
            caller.check(Need::Read, None)?;
            if caller.reach().is_everything() {
                Ok(())
            } else {
                Err(Status::permission_denied(
                    "access denied: a persistent subscription to $all delivers events of every stream; this token is limited to stream prefixes, so subscribe to a group on one of its streams",
                ))
            }
        }
    }
}

/// One consumer's call.
struct Call {
    consumer: Consumer,
    target: Target,
    group: String,
    structured: bool,
    /// The keys of the events delivered and not yet acked or nacked, by event id.
    delivered: HashMap<uuid::Uuid, Vec<EventKey>>,
    /// The ids of `delivered`, oldest first (some may be answered already).
    order: VecDeque<uuid::Uuid>,
}

impl Call {
    async fn serve(mut self, mut requests: Streaming<ReadReq>, tx: Tx) {
        let confirmation = ReadResp {
            content: Some(read_resp::Content::SubscriptionConfirmation(
                read_resp::SubscriptionConfirmation {
                    subscription_id: format!("{}::{}", self.target, self.group),
                },
            )),
        };
        if tx.send(Ok(confirmation)).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                biased;
                () = tx.closed() => return,
                message = requests.message() => match message {
                    Ok(Some(ReadReq { content: Some(content) })) => self.answer(content),
                    Ok(Some(_)) => {}
                    // The client finished or went: the consumer leaves the group.
                    Ok(None) | Err(_) => return,
                },
                event = self.consumer.next() => match event {
                    Some(event) => {
                        if tx.send(Ok(self.deliver(event))).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        let _ = tx
                            .send(Err(error::persistent_dropped(&self.target, &self.group)))
                            .await;
                        return;
                    }
                },
            }
        }
    }

    /// An event as the response carries it, remembered by its id.
    fn deliver(&mut self, delivered: PersistentEvent) -> ReadResp {
        let id = delivered.event.id;
        let keys = self.delivered.entry(id).or_default();
        if !keys.contains(&delivered.key) {
            keys.push(delivered.key);
            self.order.push_back(id);
        }
        while self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.delivered.remove(&oldest);
            }
        }
        let read = wire::read_event(delivered.event, self.structured);
        let commit = read.event.as_ref().map_or(0, |e| e.commit_position);
        ReadResp {
            content: Some(read_resp::Content::Event(read_resp::ReadEvent {
                event: read.event,
                link: None,
                position: Some(read_event::Position::CommitPosition(commit)),
                count: Some(read_event::Count::RetryCount(
                    i32::try_from(delivered.retry_count).unwrap_or(i32::MAX),
                )),
            })),
        }
    }

    /// The keys of the events `ids` name (ids this call did not deliver are ignored).
    fn keys(&mut self, ids: Vec<WireUuid>) -> Vec<EventKey> {
        ids.into_iter()
            .filter_map(|id| wire::event_id(Some(id)).ok())
            .filter_map(|id| self.delivered.remove(&id))
            .flatten()
            .collect()
    }

    fn answer(&mut self, content: read_req::Content) {
        match content {
            read_req::Content::Ack(ack) => {
                let keys = self.keys(ack.ids);
                if !keys.is_empty() {
                    self.consumer.ack(&keys);
                }
            }
            read_req::Content::Nack(nack) => {
                let action = match Action::try_from(nack.action) {
                    Ok(Action::Park) => NackAction::Park,
                    Ok(Action::Skip) => NackAction::Skip,
                    Ok(Action::Stop) => NackAction::Stop,
                    Ok(Action::Retry | Action::Unknown) | Err(_) => NackAction::Retry,
                };
                let keys = self.keys(nack.ids);
                self.consumer.nack(&keys, action);
            }
            // Options once more: nothing to change mid-call.
            read_req::Content::Options(_) => {}
        }
    }
}
