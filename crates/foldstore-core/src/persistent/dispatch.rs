//! The dispatch state machine of one persistent-subscription group, without I/O.
//!
//! [`Dispatcher`] holds the events a group has read but not finished, the consumers
//! connected to it and what each has in flight. The group's task feeds it events, the
//! consumers' acks and nacks and the time, and carries out what it answers: deliveries
//! to send, events to park, checkpoints to store. Because it is pure, its rules are
//! tested directly, against a reference model (`tests` below):
//!
//! - an event is in flight at one consumer at most, and a consumer never has more in
//!   flight than the buffer size it connected with (a paused consumer keeps what it
//!   had and gets nothing more);
//! - every event is eventually acked, skipped or parked (at-least-once): a timeout, a
//!   retry nack or the consumer's disconnection makes it wait for delivery again;
//! - the checkpoint never passes an event that is not finished.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The identity of a consumer within one group.
pub type ConsumerId = u64;

/// How a group chooses the consumer for an event.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Strategy {
    /// Each event to the next consumer (in connection order) that has room.
    #[default]
    RoundRobin,
    /// Every event to the first connected consumer that has room; the others get
    /// events only while it is full.
    DispatchToSingle,
    /// The events of one stream to one consumer (chosen by the hash of the stream
    /// name): they wait while that consumer is full.
    Pinned,
}

/// What a consumer asks for an event it could not process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum NackAction {
    /// Park it now (written to the parked stream; [`replay`](crate::persistent) later).
    Park,
    /// Deliver it again (counts as a retry; parked after the group's max retry count).
    Retry,
    /// Treat it as done without processing.
    Skip,
    /// Disconnect this consumer; its events in flight are delivered to others.
    Stop,
}

/// Where an event comes from: the group's source (keyed by its revision in the stream,
/// or its position in `$all`) or a replay of the parked stream (keyed by the parked
/// stream's revision). Only source events move the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKey {
    /// The event's revision (stream group) or position (`$all` group).
    Source(u128),
    /// The revision of its link in the parked stream.
    Replay(u64),
}

/// The rules a [`Dispatcher`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchRules {
    /// How to choose consumers.
    pub strategy: Strategy,
    /// An event in flight longer than this is delivered again (milliseconds).
    pub message_timeout_ms: u64,
    /// An event retried more often than this is parked.
    pub max_retry_count: u32,
}

/// One event for one consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery<T> {
    /// Who gets it.
    pub consumer: ConsumerId,
    /// Which event.
    pub key: EventKey,
    /// How often it was delivered before and not finished.
    pub retry_count: u32,
    /// The event.
    pub item: T,
}

/// Why an event is to be parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkReason {
    /// A consumer nacked it with [`NackAction::Park`].
    Nacked,
    /// It was retried more than the group's max retry count.
    MaxRetries,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight { consumer: ConsumerId, deadline: u64 },
    Parking,
    Done,
}

#[derive(Debug)]
struct Entry<T> {
    item: T,
    pin: u64,
    retries: u32,
    state: State,
}

#[derive(Debug, Clone, Copy)]
struct Consumer {
    id: ConsumerId,
    capacity: usize,
    in_flight: usize,
}

/// The dispatch state of one group (see the module docs). Time is milliseconds on any
/// monotonic clock the caller chooses.
#[derive(Debug)]
pub struct Dispatcher<T> {
    rules: DispatchRules,
    entries: BTreeMap<EventKey, Entry<T>>,
    waiting: BTreeSet<EventKey>,
    to_park: Vec<(EventKey, ParkReason)>,
    consumers: Vec<Consumer>,
    next_consumer: usize,
    checkpoint: Option<u128>,
    outstanding_source: usize,
    finished: u64,
}

impl<T: Clone> Dispatcher<T> {
    /// A dispatcher whose source events up to `checkpoint` (inclusive) are finished.
    pub fn new(rules: DispatchRules, checkpoint: Option<u128>) -> Self {
        Self {
            rules,
            entries: BTreeMap::new(),
            waiting: BTreeSet::new(),
            to_park: Vec::new(),
            consumers: Vec::new(),
            next_consumer: 0,
            checkpoint,
            outstanding_source: 0,
            finished: 0,
        }
    }

    /// Adds an event. Source keys must grow and lie above the checkpoint; `pin` is the
    /// hash [`Strategy::Pinned`] uses (the stream name's). A key already present is
    /// ignored.
    pub fn push(&mut self, key: EventKey, pin: u64, item: T) {
        if let EventKey::Source(k) = key {
            if self.checkpoint.is_some_and(|c| k <= c) {
                return;
            }
            if self.entries.contains_key(&key) {
                return;
            }
            self.outstanding_source += 1;
        } else if self.entries.contains_key(&key) {
            return;
        }
        self.entries.insert(
            key,
            Entry {
                item,
                pin,
                retries: 0,
                state: State::Waiting,
            },
        );
        self.waiting.insert(key);
    }

    /// How many source events are read and not finished (the live buffer's fill).
    pub fn outstanding(&self) -> usize {
        self.outstanding_source
    }

    /// Whether replayed parked events are still unfinished.
    pub fn replaying(&self) -> bool {
        self.entries
            .range(EventKey::Replay(0)..)
            .any(|(_, e)| e.state != State::Done)
    }

    /// How many events were finished (acked, skipped or parked) since creation.
    pub fn finished(&self) -> u64 {
        self.finished
    }

    /// Every source event at or below this is finished: the position to resume after.
    pub fn checkpoint(&self) -> Option<u128> {
        self.checkpoint
    }

    /// Connects a consumer that takes up to `capacity` events at once.
    pub fn connect(&mut self, id: ConsumerId, capacity: usize) {
        if self.consumers.iter().all(|c| c.id != id) {
            self.consumers.push(Consumer {
                id,
                capacity: capacity.max(1),
                in_flight: 0,
            });
        }
    }

    /// Pauses a consumer: it keeps the events it has in flight (until they are acked,
    /// nacked or time out) but is given no more, and [`Strategy::Pinned`] pins streams
    /// to the other consumers. A client that polls (the HTTP API's leases) connects,
    /// takes what is dispatched, and pauses.
    pub fn pause(&mut self, id: ConsumerId) {
        if let Some(c) = self.consumers.iter_mut().find(|c| c.id == id) {
            c.capacity = 0;
        }
    }

    /// Disconnects a consumer: its events in flight wait for another one (this does
    /// not count as a retry).
    pub fn disconnect(&mut self, id: ConsumerId) {
        self.consumers.retain(|c| c.id != id);
        for (key, entry) in &mut self.entries {
            if matches!(entry.state, State::InFlight { consumer, .. } if consumer == id) {
                entry.state = State::Waiting;
                self.waiting.insert(*key);
            }
        }
    }

    /// The connected consumers with what each has in flight, in connection order.
    pub fn consumers(&self) -> Vec<(ConsumerId, usize, usize)> {
        self.consumers
            .iter()
            .map(|c| (c.id, c.capacity, c.in_flight))
            .collect()
    }

    /// How many events are in flight, waiting for delivery and waiting to be parked.
    pub fn counts(&self) -> (usize, usize, usize) {
        let in_flight = self.consumers.iter().map(|c| c.in_flight).sum();
        let parking = self
            .entries
            .values()
            .filter(|e| e.state == State::Parking)
            .count();
        (in_flight, self.waiting.len(), parking)
    }

    /// Hands waiting events to consumers with room, by the strategy, oldest first.
    pub fn dispatch(&mut self, now: u64) -> Vec<Delivery<T>> {
        let mut out = Vec::new();
        if self.consumers.is_empty() {
            return out;
        }
        let mut free: usize = self
            .consumers
            .iter()
            .map(|c| c.capacity.saturating_sub(c.in_flight))
            .sum();
        let keys: Vec<EventKey> = self.waiting.iter().copied().collect();
        for key in keys {
            if free == 0 {
                break;
            }
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            let n = self.consumers.len();
            let chosen = match self.rules.strategy {
                Strategy::RoundRobin => (0..n)
                    .map(|i| (self.next_consumer + i) % n)
                    .find(|&i| self.consumers[i].in_flight < self.consumers[i].capacity),
                Strategy::DispatchToSingle => {
                    (0..n).find(|&i| self.consumers[i].in_flight < self.consumers[i].capacity)
                }
                Strategy::Pinned => {
                    // Among the consumers that are not paused.
                    let open = self.consumers.iter().filter(|c| c.capacity > 0).count();
                    let nth = (entry.pin % open.max(1) as u64) as usize;
                    self.consumers
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.capacity > 0)
                        .nth(nth)
                        .and_then(|(i, c)| (c.in_flight < c.capacity).then_some(i))
                }
            };
            let Some(i) = chosen else { continue };
            let consumer = &mut self.consumers[i];
            consumer.in_flight += 1;
            free -= 1;
            self.next_consumer = (i + 1) % n;
            entry.state = State::InFlight {
                consumer: consumer.id,
                deadline: now.saturating_add(self.rules.message_timeout_ms),
            };
            self.waiting.remove(&key);
            out.push(Delivery {
                consumer: consumer.id,
                key,
                retry_count: entry.retries,
                item: entry.item.clone(),
            });
        }
        out
    }

    /// Takes `key` out of flight (or out of the waiting queue): the event is no
    /// longer with any consumer. Returns the state it was in.
    fn release(&mut self, key: EventKey) -> Option<State> {
        let entry = self.entries.get_mut(&key)?;
        let before = entry.state;
        match before {
            State::InFlight { consumer, .. } => {
                if let Some(c) = self.consumers.iter_mut().find(|c| c.id == consumer) {
                    c.in_flight -= 1;
                }
            }
            State::Waiting => {
                self.waiting.remove(&key);
            }
            State::Parking | State::Done => {}
        }
        Some(before)
    }

    fn finish(&mut self, key: EventKey) {
        if let Some(entry) = self.entries.get_mut(&key)
            && entry.state != State::Done
        {
            entry.state = State::Done;
            self.finished += 1;
            if matches!(key, EventKey::Source(_)) {
                self.outstanding_source -= 1;
            }
        }
        self.prune();
    }

    fn prune(&mut self) {
        // Replayed events never hold the checkpoint back.
        let done_replays: Vec<EventKey> = self
            .entries
            .range(EventKey::Replay(0)..)
            .filter(|(_, e)| e.state == State::Done)
            .map(|(k, _)| *k)
            .collect();
        for key in done_replays {
            self.entries.remove(&key);
        }
        while let Some(entry) = self.entries.first_entry() {
            match (*entry.key(), entry.get().state) {
                (EventKey::Source(k), State::Done) => {
                    self.checkpoint = Some(k);
                    entry.remove();
                }
                _ => break,
            }
        }
    }

    /// A consumer finished `key`. An ack from a consumer the event was taken from (by
    /// a timeout) still counts: the event is done, wherever it is now.
    pub fn ack(&mut self, key: EventKey) {
        match self.release(key) {
            Some(State::Parking) | Some(State::Done) | None => {}
            Some(_) => self.finish(key),
        }
    }

    /// A consumer could not process `key` and asks for `action`. [`NackAction::Stop`]
    /// disconnects `consumer`.
    pub fn nack(&mut self, consumer: ConsumerId, key: EventKey, action: NackAction) {
        match action {
            NackAction::Stop => self.disconnect(consumer),
            NackAction::Skip => self.ack(key),
            NackAction::Park => {
                if matches!(
                    self.release(key),
                    Some(State::InFlight { .. } | State::Waiting)
                ) {
                    self.park(key, ParkReason::Nacked);
                }
            }
            NackAction::Retry => {
                if matches!(
                    self.release(key),
                    Some(State::InFlight { .. } | State::Waiting)
                ) {
                    self.retry(key);
                }
            }
        }
    }

    fn park(&mut self, key: EventKey, reason: ParkReason) {
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.state = State::Parking;
            self.to_park.push((key, reason));
        }
    }

    fn retry(&mut self, key: EventKey) {
        let max = self.rules.max_retry_count;
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        entry.retries += 1;
        if entry.retries > max {
            self.park(key, ParkReason::MaxRetries);
        } else {
            entry.state = State::Waiting;
            self.waiting.insert(key);
        }
    }

    /// Events in flight past their deadline at `now` are retried (or parked).
    pub fn expire(&mut self, now: u64) {
        let late: Vec<EventKey> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.state, State::InFlight { deadline, .. } if deadline <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            self.release(key);
            self.retry(key);
        }
    }

    /// The events to write to the parked stream now; report each with [`Self::parked`]
    /// once written.
    pub fn take_parking(&mut self) -> Vec<(EventKey, ParkReason, T)> {
        std::mem::take(&mut self.to_park)
            .into_iter()
            .filter_map(|(k, r)| self.entries.get(&k).map(|e| (k, r, e.item.clone())))
            .collect()
    }

    /// `key` is in the parked stream: it is finished.
    pub fn parked(&mut self, key: EventKey) {
        if self
            .entries
            .get(&key)
            .is_some_and(|e| e.state == State::Parking)
        {
            self.finish(key);
        }
    }

    /// Writing `key` to the parked stream failed: it waits to be parked again.
    pub fn park_failed(&mut self, key: EventKey, reason: ParkReason) {
        if self
            .entries
            .get(&key)
            .is_some_and(|e| e.state == State::Parking)
        {
            self.to_park.push((key, reason));
        }
    }

    /// Who has each event in flight (for checks and reports).
    pub fn in_flight(&self) -> HashMap<EventKey, ConsumerId> {
        self.entries
            .iter()
            .filter_map(|(k, e)| match e.state {
                State::InFlight { consumer, .. } => Some((*k, consumer)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
