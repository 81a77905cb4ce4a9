//! How the command handlers retry after a concurrent write: bounded attempts with
//! exponential backoff and full jitter.

use std::time::Duration;

/// Bounded retries with exponential backoff and jitter.
///
/// Attempt `n` (from 1) that loses a race waits a random time between zero and
/// `min(max_delay, base_delay * 2^(n-1))` before loading and deciding again ("full
/// jitter": racing writers spread out instead of colliding again).
///
/// ```
/// use std::time::Duration;
/// use foldstore_core::RetryPolicy;
///
/// let policy = RetryPolicy::default().max_attempts(3).base_delay(Duration::from_millis(1));
/// assert!(policy.delay(2) <= Duration::from_millis(2));
/// assert_eq!(RetryPolicy::no_retry().max_attempts, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How many times a command is tried in all (at least 1).
    pub max_attempts: u32,
    /// The first backoff's upper bound.
    pub base_delay: Duration,
    /// The largest backoff.
    pub max_delay: Duration,
    /// Whether to pick a random delay below the bound (recommended) or the bound itself.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// Five attempts, backoff from 2 ms up to 200 ms, with jitter.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(200),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// One attempt: a conflict is returned at once.
    pub fn no_retry() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// For streams many writers share at once (a busy account, a product's stock, a
    /// document everyone types into), where a command may lose many races in a row:
    /// 100 attempts, backoff from 1 ms up to 20 ms, with jitter.
    ///
    /// ```
    /// use std::time::Duration;
    /// use foldstore_core::RetryPolicy;
    ///
    /// let busy = RetryPolicy::contended();
    /// assert_eq!(busy.max_attempts, 100);
    /// assert_eq!(busy.max_delay, Duration::from_millis(20));
    /// ```
    pub fn contended() -> Self {
        Self {
            max_attempts: 100,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(20),
            jitter: true,
        }
    }

    /// Sets the number of attempts (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the first backoff's bound.
    pub fn base_delay(mut self, d: Duration) -> Self {
        self.base_delay = d;
        self
    }

    /// Sets the largest backoff.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Turns jitter on or off.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let bound = self.base_delay.saturating_mul(factor).min(self.max_delay);
        if !self.jitter || bound.is_zero() {
            return bound;
        }
        // The randomness of a v4 UUID: core already depends on it, no RNG crate needed.
        let r = (uuid::Uuid::new_v4().as_u128() as u64) as u128;
        let nanos = bound.as_nanos() * r / u128::from(u64::MAX);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    pub(crate) async fn wait(&self, attempt: u32) {
        let d = self.delay(attempt);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}
