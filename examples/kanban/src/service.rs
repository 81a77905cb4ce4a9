//! Commands on the board through the toolkit's [`DecisionHandler`]: read the events
//! the command's query covers, decide, and append on condition that none of them
//! changed since; on a lost race, read and decide again.

use std::sync::Arc;

use foldstore_core::{CommandContext, CommandError, DecisionHandler, EventStore, RetryPolicy};

use crate::board::{BoardCommand, BoardDecider, BoardError, CardEvent, CardId, Column};

/// A failed board command.
pub type BoardCommandError = CommandError<BoardError>;

/// The board's commands over any event store. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use kanban::board::Column;
/// use kanban::service::Board;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let board = Board::new(Arc::new(foldstore_core::InMemoryStore::new()));
/// let card = board.add("write the release notes").await?;
/// board.move_card(card, Column::Doing).await?;
/// board.move_card(card, Column::Done).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Board {
    handler: Arc<DecisionHandler<BoardDecider>>,
}

impl Board {
    /// Commands over `store`. A busy "doing" column is contended by every move into
    /// it, so a command gets up to 50 attempts, with short waits.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        let retry = RetryPolicy::contended().max_attempts(50);
        Self {
            handler: Arc::new(DecisionHandler::new(store, BoardDecider).with_retry(retry)),
        }
    }

    /// Adds a card titled `title` to "todo" and returns its number (a random one,
    /// drawn again in the unlikely case it is taken).
    pub async fn add(&self, title: &str) -> Result<CardId, BoardCommandError> {
        loop {
            let card = CardId(rand::random_range(1..1_000_000_000));
            let command = BoardCommand::Add {
                card,
                title: title.to_owned(),
            };
            match self.handle(&command).await {
                Err(CommandError::Rejected(BoardError::AlreadyExists(_))) => continue,
                other => return other.map(|_| card),
            }
        }
    }

    /// Moves `card` to `to`.
    pub async fn move_card(&self, card: CardId, to: Column) -> Result<(), BoardCommandError> {
        self.handle(&BoardCommand::Move { card, to })
            .await
            .map(drop)
    }

    /// Takes `card` off the board.
    pub async fn archive(&self, card: CardId) -> Result<(), BoardCommandError> {
        self.handle(&BoardCommand::Archive { card }).await.map(drop)
    }

    /// Handles any board command; returns the events it appended.
    pub async fn handle(
        &self,
        command: &BoardCommand,
    ) -> Result<Vec<CardEvent>, BoardCommandError> {
        let outcome = self
            .handler
            .handle(
                &command.query(),
                &command.card().stream(),
                command,
                &CommandContext::new(),
            )
            .await?;
        Ok(outcome.events)
    }
}
