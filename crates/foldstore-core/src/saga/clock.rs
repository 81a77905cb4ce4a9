//! Time for scheduled commands, replaceable in tests.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// The time source of a saga runner's schedules.
#[async_trait]
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// Waits until [`Clock::now`] reaches `at`.
    async fn sleep_until(&self, at: DateTime<Utc>);
}

/// The system clock (with Tokio's timer).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        loop {
            let left = at - Utc::now();
            let Ok(left) = left.to_std() else {
                return;
            };
            if left.is_zero() {
                return;
            }
            // Re-check after waking: the wall clock may have jumped.
            tokio::time::sleep(left.min(std::time::Duration::from_secs(60))).await;
        }
    }
}

/// A clock that moves only when told, for tests: schedules fire when the test
/// advances it past their due time. Clones share the time.
///
/// ```
/// use foldstore_core::saga::{Clock, ManualClock};
///
/// let clock = ManualClock::starting_at("2030-01-01T00:00:00Z".parse().unwrap());
/// clock.advance(chrono::Duration::minutes(5));
/// assert_eq!(clock.now().to_rfc3339(), "2030-01-01T00:05:00+00:00");
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
    moved: Arc<watch::Sender<()>>,
}

impl ManualClock {
    /// A clock showing `now`.
    pub fn starting_at(now: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(now)),
            moved: Arc::new(watch::channel(()).0),
        }
    }

    /// Moves the clock forward by `by`, waking sleepers that are now due.
    pub fn advance(&self, by: chrono::Duration) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) += by;
        self.moved.send_replace(());
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        let mut moved = self.moved.subscribe();
        while self.now() < at {
            if moved.changed().await.is_err() {
                return;
            }
        }
    }
}
