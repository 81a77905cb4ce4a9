//! One gift card as a decider ([`GiftCardDecider`]): commands, events, state and the
//! pure `decide`/`evolve` pair. No I/O.
//!
//! A card lives in the stream `giftcard-<n>`. Every event names its card in its data
//! and carries the tag `card:<n>`. Amounts are in cents.

use foldstore_core::DomainEvent;
use foldstore_core::decider::Decider;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A card number. Displays as the bare number, which is what its tag carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CardId(pub u32);

impl CardId {
    /// The card's stream: `giftcard-<n>`.
    pub fn stream(self) -> foldstore_core::StreamName {
        foldstore_core::StreamName::new(format!("giftcard-{}", self.0))
            .expect("giftcard-<n> is a valid stream name")
    }
}

impl std::fmt::Display for CardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What happened to a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum GiftCardEvent {
    /// The card was sold with a value.
    Issued {
        /// The card.
        #[event(tag = "card")]
        card: CardId,
        /// Its value.
        amount: u64,
    },
    /// Part of the value was spent.
    Redeemed {
        /// The card.
        #[event(tag = "card")]
        card: CardId,
        /// How much.
        amount: u64,
        /// The redemption's id, chosen by the till: a till that resends a redemption
        /// after a timeout sends the same id.
        redemption: Uuid,
    },
    /// The card was cancelled; what was left on it is no longer owed.
    Cancelled {
        /// The card.
        #[event(tag = "card")]
        card: CardId,
        /// The balance it had.
        remaining: u64,
    },
}

/// The stored event types, one per variant.
pub const GIFT_CARD_EVENT_TYPES: [&str; 3] = ["Issued", "Redeemed", "Cancelled"];

impl GiftCardEvent {
    /// The card the event belongs to.
    pub fn card(&self) -> CardId {
        match self {
            GiftCardEvent::Issued { card, .. }
            | GiftCardEvent::Redeemed { card, .. }
            | GiftCardEvent::Cancelled { card, .. } => *card,
        }
    }

    /// Reads a gift-card event back, or `None` when `event` is not one.
    pub fn decode(event: &foldstore_core::RecordedEvent) -> Option<GiftCardEvent> {
        GiftCardEvent::from_recorded(event).ok()
    }
}

/// What can be asked of a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GiftCardCommand {
    /// Sell it with a value.
    Issue {
        /// The card.
        card: CardId,
        /// Its value.
        amount: u64,
    },
    /// Spend part of its value.
    Redeem {
        /// The card.
        card: CardId,
        /// How much.
        amount: u64,
        /// The till's id for this redemption.
        redemption: Uuid,
    },
    /// Cancel it.
    Cancel {
        /// The card.
        card: CardId,
    },
}

impl GiftCardCommand {
    /// The card the command is for.
    pub fn card(&self) -> CardId {
        match self {
            GiftCardCommand::Issue { card, .. }
            | GiftCardCommand::Redeem { card, .. }
            | GiftCardCommand::Cancel { card } => *card,
        }
    }
}

/// Why a card refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GiftCardError {
    /// The card was never issued.
    #[error("gift card {0} was never issued: check the card number")]
    NotIssued(CardId),
    /// The card was issued already.
    #[error("gift card {0} is already issued: pick another card number")]
    AlreadyIssued(CardId),
    /// An amount of zero.
    #[error("gift card {0}: an amount of 0 cents means nothing; ask for at least 1 cent")]
    ZeroAmount(CardId),
    /// The card was cancelled.
    #[error("gift card {0} was cancelled: it can no longer be spent")]
    Cancelled(CardId),
    /// The card holds less than asked for.
    #[error(
        "gift card {card} holds {balance} cents, less than the {amount} asked for: ask for at most {balance}"
    )]
    InsufficientBalance {
        /// The card.
        card: CardId,
        /// Its balance.
        balance: u64,
        /// The amount asked for.
        amount: u64,
    },
}

/// What a card remembers to decide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GiftCard {
    /// Whether it was issued.
    pub issued: bool,
    /// What is left on it, in cents.
    pub balance: u64,
    /// Whether it was cancelled.
    pub cancelled: bool,
}

impl GiftCard {
    /// Applies one event.
    pub fn evolve(mut self, event: &GiftCardEvent) -> Self {
        match event {
            GiftCardEvent::Issued { amount, .. } => {
                self.issued = true;
                self.balance = *amount;
            }
            GiftCardEvent::Redeemed { amount, .. } => {
                self.balance = self.balance.saturating_sub(*amount);
            }
            GiftCardEvent::Cancelled { .. } => {
                self.cancelled = true;
                self.balance = 0;
            }
        }
        self
    }

    /// Decides what a command does. An empty list means "already done".
    pub fn decide(&self, command: &GiftCardCommand) -> Result<Vec<GiftCardEvent>, GiftCardError> {
        let card = command.card();
        match *command {
            GiftCardCommand::Issue { .. } if self.issued => Err(GiftCardError::AlreadyIssued(card)),
            GiftCardCommand::Issue { amount: 0, .. } => Err(GiftCardError::ZeroAmount(card)),
            GiftCardCommand::Issue { amount, .. } => {
                Ok(vec![GiftCardEvent::Issued { card, amount }])
            }
            _ if !self.issued => Err(GiftCardError::NotIssued(card)),
            GiftCardCommand::Cancel { .. } if self.cancelled => Ok(vec![]),
            GiftCardCommand::Cancel { .. } => Ok(vec![GiftCardEvent::Cancelled {
                card,
                remaining: self.balance,
            }]),
            GiftCardCommand::Redeem { .. } if self.cancelled => Err(GiftCardError::Cancelled(card)),
            GiftCardCommand::Redeem { amount: 0, .. } => Err(GiftCardError::ZeroAmount(card)),
            GiftCardCommand::Redeem { amount, .. } if amount > self.balance => {
                Err(GiftCardError::InsufficientBalance {
                    card,
                    balance: self.balance,
                    amount,
                })
            }
            GiftCardCommand::Redeem {
                amount, redemption, ..
            } => Ok(vec![GiftCardEvent::Redeemed {
                card,
                amount,
                redemption,
            }]),
        }
    }
}

/// The gift-card decider, for the toolkit's command handler: one card stream is one
/// [`GiftCard`].
///
/// ```
/// use foldstore_core::decider::{Decider, fold};
/// use gift_card::card::{CardId, GiftCardCommand, GiftCardDecider, GiftCardError, GiftCardEvent};
///
/// let card = CardId(7);
/// let state = fold(&GiftCardDecider, &[GiftCardEvent::Issued { card, amount: 2500 }]);
/// let redemption = uuid::Uuid::nil();
/// let too_much = GiftCardCommand::Redeem { card, amount: 2501, redemption };
/// assert!(matches!(
///     GiftCardDecider.decide(&too_much, &state),
///     Err(GiftCardError::InsufficientBalance { balance: 2500, .. })
/// ));
/// let coffee = GiftCardCommand::Redeem { card, amount: 450, redemption };
/// assert_eq!(GiftCardDecider.decide(&coffee, &state).unwrap().len(), 1);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct GiftCardDecider;

impl Decider for GiftCardDecider {
    type Command = GiftCardCommand;
    type Event = GiftCardEvent;
    type State = GiftCard;
    type Error = GiftCardError;

    fn initial_state(&self) -> GiftCard {
        GiftCard::default()
    }

    fn decide(
        &self,
        command: &GiftCardCommand,
        state: &GiftCard,
    ) -> Result<Vec<GiftCardEvent>, GiftCardError> {
        state.decide(command)
    }

    fn evolve(&self, state: GiftCard, event: &GiftCardEvent) -> GiftCard {
        state.evolve(event)
    }
}

#[cfg(test)]
mod tests {
    use foldstore_core::testing::DeciderSpec;

    use super::*;

    const C: CardId = CardId(1);
    const R: Uuid = Uuid::from_u128(1);

    fn issued(amount: u64) -> GiftCardEvent {
        GiftCardEvent::Issued { card: C, amount }
    }

    fn redeem(amount: u64) -> GiftCardCommand {
        GiftCardCommand::Redeem {
            card: C,
            amount,
            redemption: R,
        }
    }

    #[test]
    fn a_redemption_spends_the_balance() {
        DeciderSpec::new(GiftCardDecider)
            .given([issued(1000)])
            .when(redeem(400))
            .then([GiftCardEvent::Redeemed {
                card: C,
                amount: 400,
                redemption: R,
            }]);
    }

    #[test]
    fn a_redemption_beyond_the_balance_is_refused() {
        let spent = GiftCardEvent::Redeemed {
            card: C,
            amount: 700,
            redemption: Uuid::from_u128(2),
        };
        DeciderSpec::new(GiftCardDecider)
            .given([issued(1000), spent])
            .when(redeem(301))
            .then_error(GiftCardError::InsufficientBalance {
                card: C,
                balance: 300,
                amount: 301,
            });
    }

    #[test]
    fn a_cancelled_card_cannot_be_spent_and_cancelling_twice_changes_nothing() {
        let cancelled = GiftCardEvent::Cancelled {
            card: C,
            remaining: 1000,
        };
        DeciderSpec::new(GiftCardDecider)
            .given([issued(1000)])
            .when(GiftCardCommand::Cancel { card: C })
            .then([cancelled.clone()]);
        DeciderSpec::new(GiftCardDecider)
            .given([issued(1000), cancelled.clone()])
            .when(redeem(1))
            .then_error(GiftCardError::Cancelled(C));
        DeciderSpec::new(GiftCardDecider)
            .given([issued(1000), cancelled])
            .when(GiftCardCommand::Cancel { card: C })
            .then([]);
    }

    #[test]
    fn unknown_cards_zero_amounts_and_second_issues_are_refused() {
        DeciderSpec::new(GiftCardDecider)
            .when(redeem(1))
            .then_error(GiftCardError::NotIssued(C));
        DeciderSpec::new(GiftCardDecider)
            .given([issued(1000)])
            .when(redeem(0))
            .then_error(GiftCardError::ZeroAmount(C));
        DeciderSpec::new(GiftCardDecider)
            .given([issued(1000)])
            .when(GiftCardCommand::Issue { card: C, amount: 5 })
            .then_error(GiftCardError::AlreadyIssued(C));
    }

    #[test]
    fn events_are_stored_with_their_card_tag() {
        let e = GiftCardEvent::Redeemed {
            card: CardId(3),
            amount: 5,
            redemption: R,
        };
        let new = e.to_new_event().unwrap();
        assert_eq!(new.event_type, "Redeemed");
        assert_eq!(new.tags, ["card:3"]);
        let data: serde_json::Value = serde_json::from_slice(&new.data).unwrap();
        assert_eq!(data["amount"], 5);
        assert_eq!(
            GiftCardEvent::decode_data("Redeemed", &new.data).unwrap(),
            e
        );
    }
}
