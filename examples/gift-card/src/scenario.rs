//! A busy shop, and the checks that it kept its rules.
//!
//! [`run_shop`] issues a few cards, then has many tills redeem random amounts from
//! them at once (so most redemptions race others on the same card), resend some
//! redemptions as a till does after a timeout, and cancel one card halfway, while
//! the read model's runner is restarted. Every answer is recorded. [`ShopReport::assert_holds`] then reads the whole log and
//! checks it against those answers and against the read model.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foldstore_core::EventStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::card::{CardId, GiftCardError, GiftCardEvent};
use crate::read_model::{self, CardRow, CardsReadModel};
use crate::service::{GiftCardCommandError, GiftCards};

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct ShopConfig {
    /// Cards issued (`CardId(0)` .. ).
    pub cards: u32,
    /// Each card's value, in cents.
    pub value: u64,
    /// Tills redeeming at once.
    pub tills: usize,
    /// Redemptions per till.
    pub redemptions: usize,
    /// The most one redemption asks for, in cents.
    pub max_amount: u64,
    /// Replays a run.
    pub seed: u64,
}

impl ShopConfig {
    /// 32 tills, 40 redemptions each (75 cents on average), over 6 cards of 150.00:
    /// the cards run dry near the end, so the last redemptions are refused for lack
    /// of balance while others still race them.
    pub fn standard(seed: u64) -> Self {
        Self {
            cards: 6,
            value: 15_000,
            tills: 32,
            redemptions: 40,
            max_amount: 150,
            seed,
        }
    }
}

/// What a till was told about one redemption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Charged.
    Charged,
    /// Refused: the card held less.
    Insufficient,
    /// Refused: the card was cancelled.
    Cancelled,
}

/// A recorded redemption.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// The card.
    pub card: CardId,
    /// How much.
    pub amount: u64,
    /// The first answer.
    pub answer: Answer,
}

/// Everything the tills were told, and the read model's database.
pub struct ShopReport {
    /// Each redemption by its id.
    pub attempts: HashMap<Uuid, Attempt>,
    /// Resends, each answered `already_applied` with the first answer's events.
    pub resends: usize,
    /// Appends of charged redemptions that lost a race on their card and were decided
    /// again: how hard the tills contended.
    pub retried: usize,
    /// The card cancelled halfway, and what it held then.
    pub cancelled: (CardId, u64),
    /// The configuration.
    pub config: ShopConfig,
    /// The events of `$all` that are gift-card events, in order.
    pub log: Vec<GiftCardEvent>,
    /// The read model's rows once it caught up.
    pub read_model: BTreeMap<CardId, CardRow>,
    /// What the read model says is still owed on open cards.
    pub outstanding: u64,
    /// The same, folded again from zero.
    pub rebuilt: BTreeMap<CardId, CardRow>,
}

/// Why a run could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    /// A command failed for another reason than the card's rules.
    #[error("a gift-card command failed: {0}")]
    Command(#[from] GiftCardCommandError),
    /// A resent redemption got another answer than the first time.
    #[error("redemption {0} was resent and answered differently: {1}")]
    Resend(Uuid, String),
    /// Reading the log failed.
    #[error("reading the log failed: {0}")]
    Read(#[from] foldstore_core::ReadError),
    /// The read model failed.
    #[error("the read model failed: {0}")]
    ReadModel(String),
    /// A till's task panicked, or a command answered what no rule allows.
    #[error("the run went wrong: {0}")]
    Unexpected(String),
}

/// Runs the shop over `store`, with its read model in `read_model_path`.
pub async fn run_shop(
    store: Arc<dyn EventStore>,
    read_model_path: &std::path::Path,
    config: &ShopConfig,
) -> Result<ShopReport, ShopError> {
    let read_model = CardsReadModel::start(store.clone(), read_model_path)
        .map_err(|e| ShopError::ReadModel(e.to_string()))?;
    let cards = GiftCards::new(store.clone());
    for n in 0..config.cards {
        cards.issue(CardId(n), config.value).await?;
    }
    let attempts: Arc<Mutex<HashMap<Uuid, Attempt>>> = Arc::default();
    let mut tills = Vec::new();
    for till in 0..config.tills {
        let (cards, attempts, config) = (cards.clone(), attempts.clone(), config.clone());
        tills.push(tokio::spawn(async move {
            run_till(&cards, &attempts, &config, till).await
        }));
    }
    // Halfway through, card 0 is cancelled: later redemptions of it are refused.
    let victim = CardId(0);
    while attempts_len(&attempts) < config.tills * config.redemptions / 2
        && !tills.iter().all(|t| t.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The read model's runner stops here and a new one starts on the same database,
    // as after a restart of the process: it resumes from the checkpoint, and the
    // final check shows that no event was skipped or applied twice.
    read_model
        .stop()
        .await
        .map_err(|e| ShopError::ReadModel(e.to_string()))?;
    let read_model = CardsReadModel::start(store.clone(), read_model_path)
        .map_err(|e| ShopError::ReadModel(e.to_string()))?;
    let cancelled = match cards.cancel(victim).await?.events.as_slice() {
        [GiftCardEvent::Cancelled { remaining, .. }] => (victim, *remaining),
        other => {
            return Err(ShopError::Unexpected(format!(
                "cancelling card 0 gave {other:?}"
            )));
        }
    };
    let (mut resends, mut retried) = (0, 0);
    for till in tills {
        let (r, c) = till
            .await
            .map_err(|e| ShopError::Unexpected(e.to_string()))??;
        resends += r;
        retried += c;
    }

    let log = read_model::gift_card_events(store.as_ref()).await?;
    if !read_model
        .caught_up(Duration::from_secs(30))
        .await
        .map_err(ShopError::Read)?
    {
        return Err(ShopError::ReadModel(
            "the read model did not catch up within 30 s".into(),
        ));
    }
    let (rows, outstanding) = read_model
        .connect()
        .and_then(|conn| Ok((read_model::rows(&conn)?, read_model::outstanding(&conn)?)))
        .map_err(|e| ShopError::ReadModel(e.to_string()))?;
    read_model
        .stop()
        .await
        .map_err(|e| ShopError::ReadModel(e.to_string()))?;
    let attempts = std::mem::take(&mut *attempts.lock().expect("attempts"));
    Ok(ShopReport {
        attempts,
        resends,
        retried,
        cancelled,
        config: config.clone(),
        log,
        read_model: rows,
        outstanding,
        rebuilt: read_model::rebuild(store.as_ref()).await?,
    })
}

fn attempts_len(attempts: &Mutex<HashMap<Uuid, Attempt>>) -> usize {
    attempts.lock().expect("attempts").len()
}

/// One till: redeems, resends one redemption in eight, records every first answer.
/// Returns how many it resent, and how many of its appends were retried.
async fn run_till(
    cards: &GiftCards,
    attempts: &Mutex<HashMap<Uuid, Attempt>>,
    config: &ShopConfig,
    till: usize,
) -> Result<(usize, usize), ShopError> {
    let mut rng = StdRng::seed_from_u64(config.seed ^ (till as u64).wrapping_mul(0x9e37));
    let (mut resends, mut retried) = (0, 0);
    for _ in 0..config.redemptions {
        let card = CardId(rng.random_range(0..config.cards));
        let amount = rng.random_range(1..=config.max_amount);
        let id = Uuid::from_u128(rng.random());
        let first = cards.redeem(card, amount, id).await;
        if let Ok(outcome) = &first {
            retried += outcome.attempts.saturating_sub(1) as usize;
        }
        let answer = match first.as_ref().err().map(refusal) {
            None => Answer::Charged,
            Some(Some(refused)) => refused,
            Some(None) => return Err(first.expect_err("an error").into()),
        };
        attempts.lock().expect("attempts").insert(
            id,
            Attempt {
                card,
                amount,
                answer,
            },
        );
        if rng.random_ratio(1, 8) {
            resends += 1;
            let again = cards.redeem(card, amount, id).await;
            let same = match (&first, &again) {
                (Ok(a), Ok(b)) => b.already_applied && a.events == b.events,
                (Err(a), Err(b)) => refusal(a).is_some() && refusal(b).is_some(),
                _ => false,
            };
            if !same {
                return Err(ShopError::Resend(id, format!("{first:?} then {again:?}")));
            }
        }
    }
    Ok((resends, retried))
}

/// The refusal a card's rules gave, or `None` for any other failure.
fn refusal(e: &GiftCardCommandError) -> Option<Answer> {
    match e {
        GiftCardCommandError::Rejected(GiftCardError::InsufficientBalance { .. }) => {
            Some(Answer::Insufficient)
        }
        GiftCardCommandError::Rejected(GiftCardError::Cancelled(_)) => Some(Answer::Cancelled),
        _ => None,
    }
}

impl ShopReport {
    /// Checks every rule; panics with what broke. Returns how many redemptions got
    /// each answer.
    ///
    /// - Replaying the log card by card, no redemption ever exceeds the balance and
    ///   none follows a cancellation: no card was overdrawn.
    /// - Each redemption id is stored at most once, and exactly the charged
    ///   redemptions are stored, each with its card and amount: nothing answered
    ///   "charged" was lost, nothing refused was kept, no resend charged twice.
    /// - The cancelled card's `remaining` is its value minus what was charged on it
    ///   before the cancellation.
    /// - The read model, whose runner was restarted halfway, equals the log folded
    ///   again from zero; its balances equal each card's value minus what was
    ///   charged, and `outstanding` their sum.
    pub fn assert_holds(&self) -> BTreeMap<&'static str, usize> {
        let mut balance: BTreeMap<CardId, u64> = BTreeMap::new();
        let mut cancelled: HashSet<CardId> = HashSet::new();
        let mut stored: HashMap<Uuid, (CardId, u64)> = HashMap::new();
        let mut charged_before_cancel = 0;
        for event in &self.log {
            match *event {
                GiftCardEvent::Issued { card, amount } => {
                    assert!(
                        balance.insert(card, amount).is_none(),
                        "card {card} issued twice"
                    );
                }
                GiftCardEvent::Redeemed {
                    card,
                    amount,
                    redemption,
                } => {
                    assert!(
                        !cancelled.contains(&card),
                        "card {card} spent after its cancellation"
                    );
                    let left = balance.get_mut(&card).expect("redeemed before issued");
                    assert!(
                        amount <= *left,
                        "card {card} overdrawn: {amount} from {left}"
                    );
                    *left -= amount;
                    if card == self.cancelled.0 {
                        charged_before_cancel += amount;
                    }
                    let again = stored.insert(redemption, (card, amount));
                    assert!(again.is_none(), "redemption {redemption} stored twice");
                }
                GiftCardEvent::Cancelled { card, remaining } => {
                    assert!(cancelled.insert(card), "card {card} cancelled twice");
                    assert_eq!(remaining, balance[&card], "card {card}'s remaining balance");
                }
            }
        }
        assert_eq!(
            self.cancelled.1,
            self.config.value - charged_before_cancel,
            "the cancelled card's remaining balance"
        );

        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for (id, attempt) in &self.attempts {
            let kept = stored.get(id);
            match attempt.answer {
                Answer::Charged => assert_eq!(
                    kept,
                    Some(&(attempt.card, attempt.amount)),
                    "charged redemption {id} is not stored as charged"
                ),
                Answer::Insufficient | Answer::Cancelled => {
                    assert_eq!(kept, None, "refused redemption {id} was stored")
                }
            }
            let name = match attempt.answer {
                Answer::Charged => "charged",
                Answer::Insufficient => "insufficient",
                Answer::Cancelled => "cancelled",
            };
            *counts.entry(name).or_default() += 1;
        }
        assert_eq!(stored.len(), counts.get("charged").copied().unwrap_or(0));
        counts.insert("resent", self.resends);

        assert_eq!(
            self.read_model, self.rebuilt,
            "the read model against a rebuild"
        );
        for (card, row) in &self.read_model {
            let expected = if cancelled.contains(card) {
                0
            } else {
                balance[card]
            };
            assert_eq!(
                row.balance(),
                expected,
                "card {card}'s balance in the read model"
            );
        }
        let owed: u64 = self.read_model.values().map(CardRow::balance).sum();
        assert_eq!(self.outstanding, owed, "what the read model says is owed");
        counts
    }
}
