//! Command handling on the toolkit's [`CommandHandler`]: load the card's stream,
//! decide, append with the revision read, and on a conflict load, decide and append
//! again.
//!
//! Every command carries an id seed ([`CommandContext::id_seed`]), so its events' ids
//! are derived from it: a redemption from its till's redemption id, an issue or a
//! cancellation from the card number. A till that resends a redemption after a timeout
//! (the first attempt may or may not have been stored) gets the first answer back and
//! the card is charged once, even if the balance has since fallen below the amount.

use std::sync::Arc;

use foldstore_core::{
    CommandContext, CommandError, CommandHandler, CommandOutcome, EventStore, RetryPolicy,
};
use uuid::Uuid;

use crate::card::{
    CardId, GiftCard, GiftCardCommand, GiftCardDecider, GiftCardError, GiftCardEvent,
};

/// A failed gift-card command.
pub type GiftCardCommandError = CommandError<GiftCardError>;

/// The namespace of the ids derived from card numbers (issue and cancel).
const CARD_COMMANDS: Uuid = Uuid::from_u128(0x6966_7463_6172_642d_636f_6d6d_616e_6473);

/// Gift-card commands over any event store. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use gift_card::card::CardId;
/// use gift_card::service::GiftCards;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cards = GiftCards::new(Arc::new(foldstore_core::InMemoryStore::new()));
/// let card = CardId(1);
/// cards.issue(card, 2500).await?;
/// let coffee = uuid::Uuid::now_v7();
/// cards.redeem(card, 450, coffee).await?;
/// // The till timed out and sends the same redemption again: charged once.
/// let again = cards.redeem(card, 450, coffee).await?;
/// assert!(again.already_applied);
/// assert_eq!(cards.card(card).await?.balance, 2050);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct GiftCards {
    handler: Arc<CommandHandler<GiftCardDecider>>,
}

impl GiftCards {
    /// Handlers over `store`. A busy card may lose many races in a row, so a command
    /// gets up to 100 attempts, with short waits.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        let retry = RetryPolicy::contended();
        Self {
            handler: Arc::new(CommandHandler::new(store, GiftCardDecider).with_retry(retry)),
        }
    }

    /// Sells card `card` with `amount` cents on it.
    pub async fn issue(
        &self,
        card: CardId,
        amount: u64,
    ) -> Result<CommandOutcome<GiftCardEvent>, GiftCardCommandError> {
        let command = GiftCardCommand::Issue { card, amount };
        self.handle(&command, card_seed(card, "issue")).await
    }

    /// Spends `amount` cents of card `card`; `redemption` is the till's id for it.
    /// `already_applied` in the answer says this redemption had been stored before.
    pub async fn redeem(
        &self,
        card: CardId,
        amount: u64,
        redemption: Uuid,
    ) -> Result<CommandOutcome<GiftCardEvent>, GiftCardCommandError> {
        let command = GiftCardCommand::Redeem {
            card,
            amount,
            redemption,
        };
        self.handle(&command, redemption).await
    }

    /// Cancels card `card`.
    pub async fn cancel(
        &self,
        card: CardId,
    ) -> Result<CommandOutcome<GiftCardEvent>, GiftCardCommandError> {
        let command = GiftCardCommand::Cancel { card };
        self.handle(&command, card_seed(card, "cancel")).await
    }

    /// Card `card` as its stream says now.
    pub async fn card(&self, card: CardId) -> Result<GiftCard, GiftCardCommandError> {
        Ok(self.handler.load(&card.stream()).await?.state)
    }

    async fn handle(
        &self,
        command: &GiftCardCommand,
        seed: Uuid,
    ) -> Result<CommandOutcome<GiftCardEvent>, GiftCardCommandError> {
        let ctx = CommandContext::new().id_seed(seed);
        self.handler
            .handle(&command.card().stream(), command, &ctx)
            .await
    }
}

/// The id seed of a card's issue or cancellation: one per card and kind, so a resent
/// one is recognised.
fn card_seed(card: CardId, kind: &str) -> Uuid {
    Uuid::new_v5(&CARD_COMMANDS, format!("{kind}:{card}").as_bytes())
}
