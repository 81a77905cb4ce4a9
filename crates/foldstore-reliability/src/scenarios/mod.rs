//! The scenarios, one module each. Every scenario starts its own servers on a fresh
//! store, runs, and returns a [`Report`](crate::report::Report).

use std::path::PathBuf;
use std::time::Duration;

use foldstore_postgres::testkit::{TestSchema, fresh_schema_name};

use crate::error::HarnessError;
use crate::server::Backend;

pub mod auth_walk;
pub mod counters;
pub mod disk_full;
pub mod kill_loop;
pub mod pg_restart;
pub mod slow_consumers;
pub mod sse_resume;

/// What every scenario needs from its caller.
#[derive(Debug, Clone)]
pub struct Env {
    /// The `foldstore` binary to test.
    pub foldstore: PathBuf,
    /// A PostgreSQL database for the PostgreSQL scenarios.
    pub postgres_url: Option<String>,
    /// A directory for SQLite stores and token files (on a real disk).
    pub scratch: PathBuf,
}

/// Which backend a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// A SQLite store in a fresh directory.
    Sqlite,
    /// A fresh schema in `Env::postgres_url`.
    Postgres,
}

/// A fresh store; the guard removes it when dropped.
pub enum Fresh {
    /// A SQLite directory.
    Sqlite(tempfile::TempDir),
    /// A PostgreSQL schema.
    Postgres(TestSchema),
}

impl std::fmt::Debug for Fresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fresh::Sqlite(d) => write!(f, "Sqlite({})", d.path().display()),
            Fresh::Postgres(s) => write!(f, "Postgres({})", s.schema),
        }
    }
}

impl Fresh {
    /// The backend to hand to servers.
    pub fn backend(&self) -> Backend {
        match self {
            Fresh::Sqlite(d) => Backend::Sqlite(d.path().to_owned()),
            Fresh::Postgres(s) => Backend::Postgres {
                url: s.url.clone(),
                schema: s.schema.clone(),
            },
        }
    }
}

impl Env {
    /// A fresh store of `kind`.
    pub fn fresh(&self, kind: BackendKind) -> Result<Fresh, HarnessError> {
        match kind {
            BackendKind::Sqlite => Ok(Fresh::Sqlite(self.scratch_dir()?)),
            BackendKind::Postgres => {
                let url = self.postgres_url.clone().ok_or_else(|| {
                    HarnessError::Unavailable(
                        "this scenario needs PostgreSQL: set FOLDSTORE_TEST_POSTGRES_URL (or --postgres-url)".into(),
                    )
                })?;
                Ok(Fresh::Postgres(TestSchema {
                    url,
                    schema: fresh_schema_name(),
                }))
            }
        }
    }

    /// A fresh directory under the scratch directory.
    pub fn scratch_dir(&self) -> Result<tempfile::TempDir, HarnessError> {
        std::fs::create_dir_all(&self.scratch)
            .map_err(|e| HarnessError::io(format!("create {}", self.scratch.display()), e))?;
        tempfile::Builder::new()
            .prefix("reliability-")
            .tempdir_in(&self.scratch)
            .map_err(|e| HarnessError::io("create a scratch directory", e))
    }
}

/// The `q` quantile (0..=1) of some durations, in milliseconds.
pub fn quantile_ms(values: &[Duration], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    (v[i] * 10.0).round() / 10.0
}

/// A random duration in `[lo, hi)` milliseconds.
pub fn random_ms(lo: u64, hi: u64) -> Duration {
    use rand::Rng;
    Duration::from_millis(rand::rng().random_range(lo..hi.max(lo + 1)))
}
