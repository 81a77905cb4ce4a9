//! Locks that make one runner the only active one across processes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::projection::HandlerError;

/// A lock held by the one active runner of a saga (or of any other job) across
/// processes. The SQL backends provide ones that the operating system or the database
/// release when the holding process dies: `foldstore_sqlite::projection::FileLock` and
/// `foldstore_postgres::projection::AdvisoryLock`. Projections do not need one: their
/// SQL read models hold the lock themselves.
#[async_trait]
pub trait RunnerLock: Send + Sync {
    /// Takes the lock if it is free. `Ok(false)` when someone else holds it.
    async fn try_acquire(&mut self) -> Result<bool, HandlerError>;

    /// Whether the lock is still held (a database session may have died meanwhile).
    fn is_held(&self) -> bool;

    /// Gives the lock up.
    async fn release(&mut self) -> Result<(), HandlerError>;
}

/// Locks in memory, for tests: every [`InMemoryLock`] made from one set with the same
/// name excludes the others. Clones share the set.
///
/// ```
/// use foldstore_core::projection::{InMemoryLocks, RunnerLock};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let locks = InMemoryLocks::new();
/// let (mut a, mut b) = (locks.lock("billing"), locks.lock("billing"));
/// assert!(a.try_acquire().await?);
/// assert!(!b.try_acquire().await?);
/// drop(a); // dropping releases, as a process death would
/// assert!(b.try_acquire().await?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryLocks(Arc<Mutex<HashSet<String>>>);

impl InMemoryLocks {
    /// An empty set of locks.
    pub fn new() -> Self {
        Self::default()
    }

    /// A lock named `name` (not yet acquired).
    pub fn lock(&self, name: impl Into<String>) -> InMemoryLock {
        InMemoryLock {
            set: self.clone(),
            name: name.into(),
            held: false,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One lock of an [`InMemoryLocks`] set. Dropping it releases it.
#[derive(Debug)]
pub struct InMemoryLock {
    set: InMemoryLocks,
    name: String,
    held: bool,
}

impl Drop for InMemoryLock {
    fn drop(&mut self) {
        if self.held {
            self.set.held().remove(&self.name);
        }
    }
}

#[async_trait]
impl RunnerLock for InMemoryLock {
    async fn try_acquire(&mut self) -> Result<bool, HandlerError> {
        if !self.held {
            self.held = self.set.held().insert(self.name.clone());
        }
        Ok(self.held)
    }

    fn is_held(&self) -> bool {
        self.held
    }

    async fn release(&mut self) -> Result<(), HandlerError> {
        if self.held {
            self.set.held().remove(&self.name);
            self.held = false;
        }
        Ok(())
    }
}
