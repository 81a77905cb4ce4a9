//! The scenario every backend runs: open accounts with known balances, let many tasks
//! make random transfers at once (seeded, so a run can be replayed), freeze some
//! accounts before and during the run so transfers fail and compensate, wait for
//! everything to end, then check the invariants and the read model.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use foldstore_core::saga::SagaError;
use foldstore_core::{
    AppendError, CommandContext, CommandError, EventFilter, EventStore, ReadError, SubscribeFrom,
};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::Design;
use crate::account::{AccountCommand, AccountError, AccountId};
use crate::balances::{Balances, BalancesProjection};
use crate::dcb::DcbBank;
use crate::handler::AggregateBank;
use crate::ids;
use crate::invariants::{self, Expected, Verdict, Violation};
use crate::saga::SagaWorkers;
use crate::transfer::{
    OUTCOME_TYPES, Outcome, TransferCommand, TransferError, TransferEvent, TransferRequest,
};

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct Config {
    /// Seeds every random choice.
    pub seed: u64,
    /// Accounts `0..accounts` are opened.
    pub accounts: u32,
    /// Tasks making transfers at once.
    pub tasks: usize,
    /// Transfers each task makes, one after the other.
    pub transfers_per_task: usize,
    /// Accounts frozen before the transfers start.
    pub frozen_at_start: Vec<u32>,
    /// Accounts task 0 freezes half-way through, while transfers are running.
    pub frozen_during: Vec<u32>,
    /// Saga workers (aggregate design): that many transfers are carried at once.
    pub saga_workers: u32,
    /// How long to wait for every transfer to end.
    pub drain_timeout: Duration,
}

impl Config {
    /// The scenario of the bank tests: 100 accounts, 64 tasks, 8 transfers each.
    pub fn standard(seed: u64) -> Self {
        Self {
            seed,
            accounts: 100,
            tasks: 64,
            transfers_per_task: 8,
            frozen_at_start: vec![3, 42, 97],
            frozen_during: vec![10, 50, 90],
            saga_workers: 16,
            drain_timeout: Duration::from_secs(30),
        }
    }

    /// The first balance of `account`, in cents: between 100 and 1,089.
    pub fn opening_balance(&self, account: u32) -> u64 {
        100 + u64::from(account.wrapping_mul(37) % 990)
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The design that ran.
    pub design: Design,
    /// The checker's findings, with the outcome counts.
    pub verdict: Verdict,
    /// Appends that lost a race and were retried (command handler or DCB condition).
    pub conflicts: u64,
    /// Whether the read model built by the subscription equalled the rebuild.
    pub read_model: Balances,
}

/// Why a run could not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// An account command (or a DCB command) failed.
    #[error("account command failed: {0}")]
    Account(#[from] CommandError<AccountError>),
    /// A transfer command failed.
    #[error("transfer command failed: {0}")]
    Transfer(#[from] CommandError<TransferError>),
    /// The saga failed.
    #[error("saga failed: {0}")]
    Saga(#[from] SagaError),
    /// An append failed.
    #[error("append failed: {0}")]
    Append(#[from] AppendError),
    /// A read failed.
    #[error("read failed: {0}")]
    Read(#[from] ReadError),
    /// A subscription failed.
    #[error("subscription failed: {0}")]
    Subscription(#[from] foldstore_core::SubscriptionError),
    /// Transfers were still running when the timeout passed.
    #[error("{missing} transfers had no outcome after {timeout:?}: the saga is stuck or too slow")]
    NotDrained {
        /// How many were missing.
        missing: usize,
        /// The timeout.
        timeout: Duration,
    },
    /// A task panicked.
    #[error("a transfer task panicked: {0}")]
    Panicked(String),
    /// The balances projection failed.
    #[error("the balances projection failed: {0}")]
    Projection(#[from] foldstore_core::projection::ProjectionError),
    /// The read model's runner ended before it caught up.
    #[error("the balances read model stopped before it caught up")]
    ReadModelStopped,
}

/// Runs the scenario on `store` with `design`, then checks it. The report's
/// `verdict.violations` lists every broken rule.
///
/// ```
/// use std::sync::Arc;
/// use bank::{Design, scenario::{Config, run_bank_scenario}};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = Arc::new(foldstore_core::InMemoryStore::new());
/// let config = Config { tasks: 4, transfers_per_task: 3, ..Config::standard(7) };
/// let report = run_bank_scenario(store, Design::Dcb, &config).await?;
/// assert!(report.verdict.violations.is_empty());
/// assert_eq!(report.verdict.balances, report.read_model);
/// # Ok(())
/// # }
/// ```
pub async fn run_bank_scenario(
    store: Arc<dyn EventStore>,
    design: Design,
    config: &Config,
) -> Result<Report, ScenarioError> {
    let mut projection = BalancesProjection::start(store.clone())?;
    let bank = AggregateBank::new(store.clone());
    let dcb = DcbBank::new(store.clone());

    let mut expected = Expected::default();
    for n in 0..config.accounts {
        let account = AccountId(n);
        let balance = config.opening_balance(n);
        expected.opening.insert(account, balance);
        match design {
            Design::Aggregates => {
                let command = AccountCommand::Open { account, balance };
                let id = Uuid::from_u64_pair(config.seed, u64::from(n));
                bank.account(&command, &context(id)).await?;
            }
            Design::Dcb => dcb.open(account, balance).await?,
        }
    }
    let freeze = {
        let (bank, dcb) = (bank.clone(), dcb.clone());
        move |n: u32| {
            let (bank, dcb) = (bank.clone(), dcb.clone());
            async move {
                let account = AccountId(n);
                match design {
                    Design::Aggregates => {
                        let id = ids::derive(Uuid::from_u128(u128::from(n)), "freeze");
                        bank.account(&AccountCommand::Freeze { account }, &context(id))
                            .await?;
                    }
                    Design::Dcb => dcb.freeze(account).await?,
                }
                Ok::<(), ScenarioError>(())
            }
        }
    };
    for &n in &config.frozen_at_start {
        freeze(n).await?;
    }

    let workers = match design {
        Design::Aggregates => Some(SagaWorkers::spawn(
            store.clone(),
            bank.clone(),
            config.saga_workers,
        )?),
        Design::Dcb => None,
    };

    // Every request, decided up front from the seed.
    let requests: Vec<Vec<TransferRequest>> = (0..config.tasks)
        .map(|task| {
            let mut rng = StdRng::seed_from_u64(config.seed ^ (task as u64).wrapping_mul(0x9e37));
            (0..config.transfers_per_task)
                .map(|n| {
                    let from = rng.random_range(0..config.accounts);
                    let to = (from + rng.random_range(1..config.accounts)) % config.accounts;
                    TransferRequest {
                        id: ids::transfer(config.seed, task, n),
                        from: AccountId(from),
                        to: AccountId(to),
                        amount: rng.random_range(1..=600),
                    }
                })
                .collect()
        })
        .collect();
    expected.transfers = requests.iter().flatten().copied().collect();

    let start = Arc::new(Barrier::new(config.tasks));
    let mut tasks = JoinSet::new();
    for (task, mine) in requests.into_iter().enumerate() {
        let (start, bank, dcb, freeze) = (start.clone(), bank.clone(), dcb.clone(), freeze.clone());
        let frozen_during = config.frozen_during.clone();
        tasks.spawn(async move {
            start.wait().await;
            let half = mine.len() / 2;
            for (n, request) in mine.into_iter().enumerate() {
                if task == 0 && n == half {
                    for &account in &frozen_during {
                        freeze(account).await?;
                    }
                }
                match design {
                    Design::Aggregates => {
                        let ctx = CommandContext::new()
                            .correlation_id(request.id)
                            .id_seed(ids::derive(request.id, "request"));
                        bank.transfer(&TransferCommand::Request(request), &ctx)
                            .await?;
                    }
                    Design::Dcb => {
                        dcb.transfer(&request).await?;
                    }
                }
            }
            Ok::<(), ScenarioError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| ScenarioError::Panicked(e.to_string()))??;
    }

    if let Some(workers) = workers {
        let drained = wait_for_outcomes(&*store, &expected.transfers, config.drain_timeout).await;
        // Stop the workers either way; their error, if any, explains a failed drain.
        workers.stop().await?;
        drained?;
    }

    let head = store.head_position().await?;
    let read_model = projection
        .caught_up(head, &*store)
        .await
        .ok_or(ScenarioError::ReadModelStopped)?;
    projection.stop().await?;
    let verdict = invariants::check(&*store, design, &expected).await?;
    let conflicts = bank.conflicts() + dcb.conflicts();
    Ok(Report {
        design,
        verdict,
        conflicts,
        read_model,
    })
}

/// Waits until every transfer in `transfers` has an outcome event.
async fn wait_for_outcomes(
    store: &dyn EventStore,
    transfers: &[TransferRequest],
    timeout: Duration,
) -> Result<(), ScenarioError> {
    let mut missing: HashMap<Uuid, ()> = transfers.iter().map(|t| (t.id, ())).collect();
    let filter = EventFilter::category("transfer")?.with_types(OUTCOME_TYPES);
    let mut events = store.subscribe_to_all(SubscribeFrom::Start, filter).await?;
    let waited = tokio::time::timeout(timeout, async {
        while !missing.is_empty() {
            match events.next().await {
                Some(Ok(e)) => {
                    if let Some(t) = TransferEvent::decode(&e) {
                        missing.remove(&t.id());
                    }
                }
                Some(Err(e)) => return Err(ScenarioError::Subscription(e)),
                None => break,
            }
        }
        Ok(())
    })
    .await;
    match waited {
        Ok(Err(e)) => Err(e),
        _ if missing.is_empty() => Ok(()),
        _ => Err(ScenarioError::NotDrained {
            missing: missing.len(),
            timeout,
        }),
    }
}

impl Report {
    /// Panics with every violation, the outcome counts and the seed's run summary when
    /// the run broke a rule or its read model differs from the rebuild; otherwise
    /// returns the outcome counts.
    #[track_caller]
    pub fn assert_holds(&self) -> BTreeMap<&'static str, usize> {
        let mut problems: Vec<String> = self
            .verdict
            .violations
            .iter()
            .map(Violation::to_string)
            .collect();
        if self.read_model != self.verdict.balances {
            problems.push(format!(
                "the read model differs from the rebuild from zero: {:?} vs {:?}",
                self.read_model, self.verdict.balances
            ));
        }
        let count = |o| self.verdict.outcomes.get(&o).copied().unwrap_or(0);
        let counts = BTreeMap::from([
            ("completed", count(Outcome::Completed)),
            ("failed", count(Outcome::Failed)),
            ("compensated", count(Outcome::Compensated)),
        ]);
        assert!(
            problems.is_empty(),
            "{:?} design broke {} rule(s) ({counts:?}, {} events):\n{}",
            self.design,
            problems.len(),
            self.verdict.events,
            problems.join("\n")
        );
        counts
    }
}

/// A context whose event ids derive from `id`.
fn context(id: Uuid) -> CommandContext {
    CommandContext::new()
        .correlation_id(id)
        .causation_id(id)
        .id_seed(id)
}
