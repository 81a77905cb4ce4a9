//! The invariant checker: reads what a run stored and lists every way it breaks the
//! bank's rules. It knows nothing of how the events were written, so it checks both
//! designs on every backend the same way.
//!
//! 1. **No balance ever went negative**: every prefix of every account's history (its
//!    stream in the aggregate design, its tag query in the DCB design), and every prefix
//!    of `$all`, leaves each balance at zero or more; no money moves before `Opened`.
//! 2. **No money created or destroyed**: the balances sum to what was opened.
//! 3. **Every transfer ended exactly once, and its money matches its outcome**:
//!    Completed moved the amount from source to target; Failed moved nothing;
//!    Compensated debited the source and refunded it, and credited no one else.
//! 4. Each account's own history agrees with `$all`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use foldstore_core::dcb::ReadQueryOptions;
use foldstore_core::{EventStore, Position, ReadError, ReadStreamOptions, RecordedEvent};
use uuid::Uuid;

use crate::Design;
use crate::account::{AccountEvent, AccountId};
use crate::balances::{Balances, for_each_event};
use crate::dcb::DcbBank;
use crate::transfer::{Outcome, TransferEvent, TransferRequest};

/// What a run was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// The accounts opened, with their first balances.
    pub opening: BTreeMap<AccountId, u64>,
    /// Every transfer asked for.
    pub transfers: Vec<TransferRequest>,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A balance went below zero.
    NegativeBalance {
        /// The account.
        account: AccountId,
        /// Where: `$all` or the account's own history.
        history: &'static str,
        /// The event that took it there.
        position: Position,
        /// The balance after it.
        balance: i128,
    },
    /// Money moved on an account before it was opened.
    NotOpen {
        /// The account.
        account: AccountId,
        /// The event.
        position: Position,
    },
    /// The balances do not sum to what was opened.
    MoneyNotConserved {
        /// What was opened.
        expected: i128,
        /// What the balances sum to.
        actual: i128,
    },
    /// A transfer has no outcome.
    Stuck {
        /// The transfer.
        transfer: Uuid,
    },
    /// A transfer has more than one outcome.
    SeveralOutcomes {
        /// The transfer.
        transfer: Uuid,
        /// How many.
        count: usize,
    },
    /// A transfer's account events do not match its outcome.
    MoneyDoesNotMatchOutcome {
        /// The transfer.
        transfer: Uuid,
        /// Its outcome.
        outcome: Outcome,
        /// The account events recorded for it.
        events: Vec<AccountEvent>,
    },
    /// Account events name a transfer nobody asked for.
    UnknownTransfer {
        /// The transfer.
        transfer: Uuid,
    },
    /// An account's own history ends at another balance than `$all` says.
    HistoryDisagrees {
        /// The account.
        account: AccountId,
        /// From its history.
        history: i128,
        /// From `$all`.
        all: i128,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NegativeBalance {
                account,
                history,
                position,
                balance,
            } => write!(
                f,
                "{account} went to {balance} cents at position {position} ({history})"
            ),
            Violation::NotOpen { account, position } => {
                write!(
                    f,
                    "money moved on {account} before it was opened, at position {position}"
                )
            }
            Violation::MoneyNotConserved { expected, actual } => write!(
                f,
                "the balances sum to {actual} cents, but {expected} were opened"
            ),
            Violation::Stuck { transfer } => write!(f, "transfer {transfer} never ended"),
            Violation::SeveralOutcomes { transfer, count } => {
                write!(f, "transfer {transfer} ended {count} times")
            }
            Violation::MoneyDoesNotMatchOutcome {
                transfer,
                outcome,
                events,
            } => write!(
                f,
                "transfer {transfer} is {outcome:?} but its account events are {events:?}"
            ),
            Violation::UnknownTransfer { transfer } => {
                write!(
                    f,
                    "account events name transfer {transfer}, which nobody asked for"
                )
            }
            Violation::HistoryDisagrees {
                account,
                history,
                all,
            } => write!(
                f,
                "{account}'s own history ends at {history} cents, $all says {all}"
            ),
        }
    }
}

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Every broken rule; empty when the run kept them all.
    pub violations: Vec<Violation>,
    /// How many transfers ended each way.
    pub outcomes: HashMap<Outcome, usize>,
    /// The balances folded from `$all`.
    pub balances: Balances,
    /// Events in `$all`.
    pub events: usize,
}

/// Tracks balances and reports the first time one goes negative or moves unopened.
#[derive(Default)]
struct PrefixCheck {
    balances: BTreeMap<AccountId, i128>,
    open: BTreeMap<AccountId, bool>,
}

impl PrefixCheck {
    fn apply(
        &mut self,
        e: &AccountEvent,
        position: Position,
        history: &'static str,
        out: &mut Vec<Violation>,
    ) {
        let account = e.account();
        let open = self.open.entry(account).or_default();
        if matches!(e, AccountEvent::Opened { .. }) {
            *open = true;
        } else if !*open {
            out.push(Violation::NotOpen { account, position });
        }
        let balance = self.balances.entry(account).or_default();
        *balance += e.delta();
        if *balance < 0 {
            out.push(Violation::NegativeBalance {
                account,
                history,
                position,
                balance: *balance,
            });
        }
    }
}

/// Checks everything a run stored against what it was asked to do.
pub async fn check(
    store: &dyn EventStore,
    design: Design,
    expected: &Expected,
) -> Result<Verdict, ReadError> {
    let mut verdict = Verdict::default();
    let mut all = PrefixCheck::default();
    let mut by_transfer: HashMap<Uuid, Vec<AccountEvent>> = HashMap::new();
    let mut outcomes: HashMap<Uuid, Vec<Outcome>> = HashMap::new();
    let mut violations = Vec::new();
    for_each_event(store, |event: &RecordedEvent| {
        verdict.events += 1;
        verdict.balances.apply(event);
        if let Some(e) = AccountEvent::decode(event) {
            all.apply(&e, event.position, "$all", &mut violations);
            if let AccountEvent::Debited { transfer, .. }
            | AccountEvent::Credited { transfer, .. } = &e
            {
                by_transfer.entry(*transfer).or_default().push(e.clone());
            }
        } else if let Some(t) = TransferEvent::decode(event)
            && let Some(outcome) = t.outcome()
        {
            outcomes.entry(t.id()).or_default().push(outcome);
        }
    })
    .await?;

    // 1 and 4: each account's own history.
    for &account in expected.opening.keys() {
        let history = account_history(store, design, account).await?;
        let mut own = PrefixCheck::default();
        for (e, position) in &history {
            own.apply(e, *position, "its own history", &mut violations);
        }
        let from_history = own.balances.get(&account).copied().unwrap_or(0);
        let from_all = verdict
            .balances
            .balances
            .get(&account)
            .copied()
            .unwrap_or(0);
        if from_history != from_all {
            violations.push(Violation::HistoryDisagrees {
                account,
                history: from_history,
                all: from_all,
            });
        }
    }

    // 2: conservation.
    let opened: i128 = expected.opening.values().map(|b| i128::from(*b)).sum();
    if verdict.balances.total() != opened {
        violations.push(Violation::MoneyNotConserved {
            expected: opened,
            actual: verdict.balances.total(),
        });
    }

    // 3: outcomes and the money of each transfer.
    for request in &expected.transfers {
        let events = by_transfer.remove(&request.id).unwrap_or_default();
        let outcome = match outcomes.get(&request.id).map(Vec::as_slice) {
            None | Some([]) => {
                violations.push(Violation::Stuck {
                    transfer: request.id,
                });
                continue;
            }
            Some([one]) => *one,
            Some(several) => {
                violations.push(Violation::SeveralOutcomes {
                    transfer: request.id,
                    count: several.len(),
                });
                continue;
            }
        };
        *verdict.outcomes.entry(outcome).or_default() += 1;
        if !money_matches(request, outcome, &events) {
            violations.push(Violation::MoneyDoesNotMatchOutcome {
                transfer: request.id,
                outcome,
                events,
            });
        }
    }
    for transfer in by_transfer.into_keys() {
        violations.push(Violation::UnknownTransfer { transfer });
    }
    verdict.violations = violations;
    Ok(verdict)
}

/// Whether a transfer's account events are exactly what its outcome implies.
fn money_matches(r: &TransferRequest, outcome: Outcome, events: &[AccountEvent]) -> bool {
    let debit = AccountEvent::Debited {
        account: r.from,
        amount: r.amount,
        transfer: r.id,
    };
    let credit = |account, refund| AccountEvent::Credited {
        account,
        amount: r.amount,
        transfer: r.id,
        refund,
    };
    let want = match outcome {
        Outcome::Completed => vec![debit, credit(r.to, false)],
        Outcome::Failed => vec![],
        Outcome::Compensated => vec![debit, credit(r.from, true)],
    };
    events.len() == want.len() && want.iter().all(|w| events.contains(w))
}

/// An account's own history: its stream (aggregate design) or its tag query (DCB).
async fn account_history(
    store: &dyn EventStore,
    design: Design,
    account: AccountId,
) -> Result<Vec<(AccountEvent, Position)>, ReadError> {
    let events = match design {
        Design::Aggregates => {
            store
                .read_stream(&account.stream(), ReadStreamOptions::forwards())
                .await?
        }
        Design::Dcb => {
            store
                .read_query(&DcbBank::query(&[account]), ReadQueryOptions::new())
                .await?
        }
    };
    Ok(events
        .iter()
        .filter_map(|e| AccountEvent::decode(e).map(|a| (a, e.position)))
        .collect())
}
