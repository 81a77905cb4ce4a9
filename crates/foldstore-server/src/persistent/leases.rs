//! The leases of HTTP pollers: which paused consumer holds which events.
//!
//! A poll connects a consumer to the group, takes what the group hands it and pauses
//! it (`Consumer::pause`): the consumer then holds those events (the group gives them
//! to nobody else) and is given no more. The lease keeps the consumer until each of its
//! events is acked or nacked, or until the group's message timeout has passed (the
//! group has then taken the events back by its own timeout rule, and dropping the
//! consumer changes nothing). Each poll is a consumer of its own, so the group's
//! dispatcher, which hands an event to one consumer at a time, is what keeps two
//! pollers from holding one event at once.
//!
//! Leases live in this process only: an ack for an event whose lease is gone (expired,
//! or held by a server that restarted) is still sent to the group, which finishes the
//! event wherever it is (at-least-once).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use foldstore_core::persistent::{Consumer, ConsumerId, EventKey, PersistentEvent, Target};

/// How long after the message timeout a lease's consumer is kept: the group takes
/// timed-out events back on a tick of at most 100 ms, and a consumer dropped before
/// that would give them back without counting the retry.
const SLACK: Duration = Duration::from_secs(1);

/// One poll's consumer and the events it still holds.
struct Lease {
    /// Held, never read: while it lives the group keeps the events at it; dropping it
    /// disconnects it.
    _consumer: Consumer,
    keys: HashSet<EventKey>,
    expires: Instant,
}

/// The leases of one group.
#[derive(Default)]
struct GroupLeases {
    leases: HashMap<ConsumerId, Lease>,
    /// The lease holding each leased event.
    holder: HashMap<EventKey, ConsumerId>,
    /// The group's message timeout, read once (a settings change made here clears it).
    timeout: Option<Duration>,
}

impl GroupLeases {
    /// Drops the leases past their time.
    fn sweep(&mut self, now: Instant) {
        let expired: Vec<ConsumerId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.end(id);
        }
    }

    /// Drops a lease: its consumer disconnects, and the group gives what it still
    /// holds to other consumers.
    fn end(&mut self, id: ConsumerId) {
        if let Some(lease) = self.leases.remove(&id) {
            for key in &lease.keys {
                if self.holder.get(key) == Some(&id) {
                    self.holder.remove(key);
                }
            }
        }
    }
}

/// The leases of every group, in this process.
#[derive(Default)]
pub(crate) struct Leases {
    groups: Mutex<HashMap<(Target, String), GroupLeases>>,
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, HashMap<(Target, String), GroupLeases>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(target: &Target, group: &str) -> (Target, String) {
        (target.clone(), group.to_owned())
    }

    /// The group's message timeout, if known here.
    pub(crate) fn timeout(&self, target: &Target, group: &str) -> Option<Duration> {
        self.lock()
            .get(&Self::key(target, group))
            .and_then(|g| g.timeout)
    }

    /// Remembers the group's message timeout.
    pub(crate) fn set_timeout(&self, target: &Target, group: &str, timeout: Duration) {
        self.lock()
            .entry(Self::key(target, group))
            .or_default()
            .timeout = Some(timeout);
    }

    /// Drops the group's leases that are past their time.
    pub(crate) fn sweep(&self, target: &Target, group: &str) {
        let mut groups = self.lock();
        if let Some(g) = groups.get_mut(&Self::key(target, group)) {
            g.sweep(Instant::now());
        }
    }

    /// Keeps `consumer` as the lease of `events` for `timeout`; answers the lease's
    /// id, or `None` (and drops the consumer) when there are no events.
    pub(crate) fn hold(
        &self,
        target: &Target,
        group: &str,
        consumer: Consumer,
        events: &[PersistentEvent],
        timeout: Duration,
    ) -> Option<ConsumerId> {
        if events.is_empty() {
            return None;
        }
        let id = consumer.id();
        let mut groups = self.lock();
        let g = groups.entry(Self::key(target, group)).or_default();
        for e in events {
            // A lease that held it before lost it to the group's timeout.
            if let Some(previous) = g.holder.insert(e.key, id)
                && let Some(lease) = g.leases.get_mut(&previous)
            {
                lease.keys.remove(&e.key);
                if lease.keys.is_empty() {
                    g.leases.remove(&previous);
                }
            }
        }
        g.leases.insert(
            id,
            Lease {
                _consumer: consumer,
                keys: events.iter().map(|e| e.key).collect(),
                expires: Instant::now() + timeout + SLACK,
            },
        );
        Some(id)
    }

    /// `keys` were acked or nacked (the group was told first): each leaves its lease,
    /// and a lease left with nothing ends.
    pub(crate) fn release(&self, target: &Target, group: &str, keys: &[EventKey]) {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(&Self::key(target, group)) else {
            return;
        };
        for key in keys {
            let Some(id) = g.holder.remove(key) else {
                continue;
            };
            if let Some(lease) = g.leases.get_mut(&id) {
                lease.keys.remove(key);
                if lease.keys.is_empty() {
                    g.leases.remove(&id);
                }
            }
        }
        g.sweep(Instant::now());
    }

    /// Ends the leases holding any of `keys`: everything they hold goes back to the
    /// group at once. Answers how many ended.
    pub(crate) fn end_holding(&self, target: &Target, group: &str, keys: &[EventKey]) -> usize {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(&Self::key(target, group)) else {
            return 0;
        };
        let ids: HashSet<ConsumerId> = keys
            .iter()
            .filter_map(|k| g.holder.get(k))
            .copied()
            .collect();
        for id in &ids {
            g.end(*id);
        }
        ids.len()
    }

    /// Forgets a group whose settings changed or that was deleted: its consumers were
    /// disconnected with its task, and its timeout may have changed.
    pub(crate) fn forget(&self, target: &Target, group: &str) {
        self.lock().remove(&Self::key(target, group));
    }

    /// The group's open leases, after dropping those past their time.
    pub(crate) fn count(&self, target: &Target, group: &str) -> usize {
        let mut groups = self.lock();
        match groups.get_mut(&Self::key(target, group)) {
            Some(g) => {
                g.sweep(Instant::now());
                g.leases.len()
            }
            None => 0,
        }
    }
}
