//! Graceful stop: a signal that a runner checks between batches.

use tokio::sync::watch;

/// Stops runners: [`Stopper::stop`] makes every [`StopSignal`] made from it fire.
/// A runner finishes the batch it is applying (and records its checkpoint) first.
///
/// ```
/// use foldstore_core::projection::Stopper;
///
/// let stopper = Stopper::new();
/// let signal = stopper.signal();
/// assert!(!signal.is_stopped());
/// stopper.stop();
/// assert!(signal.is_stopped());
/// ```
#[derive(Debug, Clone)]
pub struct Stopper(watch::Sender<bool>);

impl Default for Stopper {
    fn default() -> Self {
        Self::new()
    }
}

impl Stopper {
    /// A stopper not yet stopped.
    pub fn new() -> Self {
        Self(watch::channel(false).0)
    }

    /// A signal that fires when [`Stopper::stop`] is called.
    pub fn signal(&self) -> StopSignal {
        StopSignal(self.0.subscribe())
    }

    /// Asks every runner holding a signal of this stopper to stop.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// The runner's side of a [`Stopper`].
#[derive(Debug, Clone)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    /// A signal that never fires.
    pub fn never() -> Self {
        // A signal whose stopper is gone never fires.
        Self(watch::channel(false).1)
    }

    /// Whether stop was asked.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until stop is asked (forever if the stopper is dropped without stopping).
    pub async fn stopped(&mut self) {
        if self.0.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
