//! The board's rules as one DCB decider ([`BoardDecider`]): cards are added to
//! "todo", moved between columns and archived, and at most [`WIP_LIMIT`] cards are
//! in "doing" at once. No I/O.
//!
//! Each card's events go to its stream `card-<n>` and carry the tag `card:<n>`, plus
//! `column:<name>` for each column whose card count they change. A move into "doing"
//! is decided on the events tagged with the card or with `column:doing`, and appended
//! on condition that none was stored since: two people moving cards into a full
//! "doing" at once cannot both win, although the cards are in different streams.

use std::collections::BTreeMap;

use foldstore_core::DomainEvent;
use foldstore_core::dcb::{Query, QueryItem};
use foldstore_core::decider::Decider;
use serde::{Deserialize, Serialize};

/// The most cards in "doing" at once.
pub const WIP_LIMIT: usize = 3;

/// A card number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CardId(pub u32);

impl CardId {
    /// The card's stream: `card-<n>`.
    pub fn stream(self) -> foldstore_core::StreamName {
        foldstore_core::StreamName::new(format!("card-{}", self.0))
            .expect("card-<n> is a valid stream name")
    }
}

impl std::fmt::Display for CardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A column of the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Column {
    /// Not started.
    Todo,
    /// In progress: at most [`WIP_LIMIT`] cards.
    Doing,
    /// Finished.
    Done,
}

impl Column {
    /// Every column, left to right.
    pub const ALL: [Column; 3] = [Column::Todo, Column::Doing, Column::Done];
}

impl std::fmt::Display for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Column::Todo => "todo",
            Column::Doing => "doing",
            Column::Done => "done",
        })
    }
}

/// What happened on the board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum CardEvent {
    /// A card was added to a column ("todo").
    Added {
        /// The card.
        #[event(tag = "card")]
        card: CardId,
        /// What it says.
        title: String,
        /// Where it starts.
        #[event(tag = "column")]
        column: Column,
    },
    /// A card moved.
    Moved {
        /// The card.
        #[event(tag = "card")]
        card: CardId,
        /// From this column.
        #[event(tag = "column")]
        from: Column,
        /// To this one.
        #[event(tag = "column")]
        to: Column,
    },
    /// A card left the board.
    Archived {
        /// The card.
        #[event(tag = "card")]
        card: CardId,
        /// The column it left.
        #[event(tag = "column")]
        from: Column,
    },
}

impl CardEvent {
    /// The card the event is about.
    pub fn card(&self) -> CardId {
        match self {
            CardEvent::Added { card, .. }
            | CardEvent::Moved { card, .. }
            | CardEvent::Archived { card, .. } => *card,
        }
    }
}

/// What can be asked of the board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BoardCommand {
    /// Add a card to "todo".
    Add {
        /// Its number.
        card: CardId,
        /// What it says.
        title: String,
    },
    /// Move a card.
    Move {
        /// The card.
        card: CardId,
        /// Where to.
        to: Column,
    },
    /// Take a card off the board.
    Archive {
        /// The card.
        card: CardId,
    },
}

impl BoardCommand {
    /// The card the command is about.
    pub fn card(&self) -> CardId {
        match self {
            BoardCommand::Add { card, .. }
            | BoardCommand::Move { card, .. }
            | BoardCommand::Archive { card } => *card,
        }
    }

    /// The events the decision rests on: the card's, and for a move into "doing" the
    /// column's too.
    pub fn query(&self) -> Query {
        let card = QueryItem::new().tags([format!("card:{}", self.card())]);
        match self {
            BoardCommand::Move {
                to: Column::Doing, ..
            } => Query::from_items([card, QueryItem::new().tags(["column:doing"])]),
            _ => Query::from_items([card]),
        }
    }
}

/// Why the board refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BoardError {
    /// No such card.
    #[error("card {0} is not on the board: check its number")]
    UnknownCard(CardId),
    /// The number is taken.
    #[error("card {0} exists already: pick another number")]
    AlreadyExists(CardId),
    /// A card without a title.
    #[error("a card needs a title of 1 to 200 characters")]
    BadTitle,
    /// The card was archived.
    #[error("card {0} was archived: it can no longer move")]
    Archived(CardId),
    /// "doing" is full.
    #[error(
        "\"doing\" already holds {} cards, its limit: finish or move one out before starting card {}",
        WIP_LIMIT,
        .0
    )]
    WipLimit(CardId),
}

/// A card as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardState {
    /// Its column.
    pub column: Column,
    /// Whether it left the board.
    pub archived: bool,
}

/// What a decision sees: the cards its query covered, and how many cards are in
/// "doing" (exact whenever the query covers `column:doing`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoardState {
    /// The cards seen.
    pub cards: BTreeMap<CardId, CardState>,
    /// Cards in "doing".
    pub doing: usize,
}

/// The board decider: one decision may span every card in "doing".
///
/// ```
/// use foldstore_core::testing::DeciderSpec;
/// use kanban::board::{BoardCommand, BoardDecider, BoardError, CardEvent, CardId, Column};
///
/// let started = |n| [
///     CardEvent::Added { card: CardId(n), title: format!("task {n}"), column: Column::Todo },
///     CardEvent::Moved { card: CardId(n), from: Column::Todo, to: Column::Doing },
/// ];
/// let mut given: Vec<CardEvent> = (1..=3).flat_map(started).collect();
/// given.push(CardEvent::Added { card: CardId(4), title: "task 4".into(), column: Column::Todo });
/// DeciderSpec::new(BoardDecider)
///     .given(given)
///     .when(BoardCommand::Move { card: CardId(4), to: Column::Doing })
///     .then_error(BoardError::WipLimit(CardId(4)));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct BoardDecider;

impl Decider for BoardDecider {
    type Command = BoardCommand;
    type Event = CardEvent;
    type State = BoardState;
    type Error = BoardError;

    fn initial_state(&self) -> BoardState {
        BoardState::default()
    }

    fn decide(
        &self,
        command: &BoardCommand,
        state: &BoardState,
    ) -> Result<Vec<CardEvent>, BoardError> {
        let card = command.card();
        let known = state.cards.get(&card).copied();
        match (command, known) {
            (BoardCommand::Add { .. }, Some(_)) => Err(BoardError::AlreadyExists(card)),
            (BoardCommand::Add { title, .. }, None) => {
                let title = title.trim();
                if title.is_empty() || title.chars().count() > 200 {
                    return Err(BoardError::BadTitle);
                }
                Ok(vec![CardEvent::Added {
                    card,
                    title: title.to_owned(),
                    column: Column::Todo,
                }])
            }
            (_, None) => Err(BoardError::UnknownCard(card)),
            (BoardCommand::Archive { .. }, Some(c)) if c.archived => Ok(vec![]),
            (BoardCommand::Archive { .. }, Some(c)) => Ok(vec![CardEvent::Archived {
                card,
                from: c.column,
            }]),
            (BoardCommand::Move { .. }, Some(c)) if c.archived => Err(BoardError::Archived(card)),
            (BoardCommand::Move { to, .. }, Some(c)) if c.column == *to => Ok(vec![]),
            (
                BoardCommand::Move {
                    to: Column::Doing, ..
                },
                Some(_),
            ) if state.doing >= WIP_LIMIT => Err(BoardError::WipLimit(card)),
            (BoardCommand::Move { to, .. }, Some(c)) => Ok(vec![CardEvent::Moved {
                card,
                from: c.column,
                to: *to,
            }]),
        }
    }

    fn evolve(&self, mut state: BoardState, event: &CardEvent) -> BoardState {
        let (leaves, enters) = match *event {
            CardEvent::Added { card, column, .. } => {
                state.cards.insert(
                    card,
                    CardState {
                        column,
                        archived: false,
                    },
                );
                (None, Some(column))
            }
            CardEvent::Moved { card, from, to } => {
                let entry = state.cards.entry(card).or_insert(CardState {
                    column: from,
                    archived: false,
                });
                entry.column = to;
                (Some(from), Some(to))
            }
            CardEvent::Archived { card, from } => {
                let entry = state.cards.entry(card).or_insert(CardState {
                    column: from,
                    archived: false,
                });
                entry.archived = true;
                (Some(from), None)
            }
        };
        if leaves == Some(Column::Doing) {
            state.doing = state.doing.saturating_sub(1);
        }
        if enters == Some(Column::Doing) {
            state.doing += 1;
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use foldstore_core::testing::DeciderSpec;

    use super::*;

    const C: CardId = CardId(1);

    fn added() -> CardEvent {
        CardEvent::Added {
            card: C,
            title: "write the docs".into(),
            column: Column::Todo,
        }
    }

    #[test]
    fn a_card_moves_and_moving_it_where_it_is_changes_nothing() {
        DeciderSpec::new(BoardDecider)
            .given([added()])
            .when(BoardCommand::Move {
                card: C,
                to: Column::Done,
            })
            .then([CardEvent::Moved {
                card: C,
                from: Column::Todo,
                to: Column::Done,
            }]);
        DeciderSpec::new(BoardDecider)
            .given([added()])
            .when(BoardCommand::Move {
                card: C,
                to: Column::Todo,
            })
            .then([]);
    }

    #[test]
    fn a_card_leaving_doing_makes_room() {
        let mut given = vec![added()];
        for n in 2..=4 {
            given.push(CardEvent::Moved {
                card: CardId(n),
                from: Column::Todo,
                to: Column::Doing,
            });
        }
        given.push(CardEvent::Archived {
            card: CardId(3),
            from: Column::Doing,
        });
        DeciderSpec::new(BoardDecider)
            .given(given)
            .when(BoardCommand::Move {
                card: C,
                to: Column::Doing,
            })
            .then([CardEvent::Moved {
                card: C,
                from: Column::Todo,
                to: Column::Doing,
            }]);
    }

    #[test]
    fn archived_unknown_and_untitled_cards_are_refused() {
        let archived = CardEvent::Archived {
            card: C,
            from: Column::Todo,
        };
        DeciderSpec::new(BoardDecider)
            .given([added(), archived])
            .when(BoardCommand::Move {
                card: C,
                to: Column::Doing,
            })
            .then_error(BoardError::Archived(C));
        DeciderSpec::new(BoardDecider)
            .when(BoardCommand::Archive { card: C })
            .then_error(BoardError::UnknownCard(C));
        DeciderSpec::new(BoardDecider)
            .when(BoardCommand::Add {
                card: C,
                title: "   ".into(),
            })
            .then_error(BoardError::BadTitle);
    }

    #[test]
    fn events_carry_the_card_and_the_columns_they_change() {
        let moved = CardEvent::Moved {
            card: CardId(7),
            from: Column::Todo,
            to: Column::Doing,
        };
        let new = moved.to_new_event().unwrap();
        assert_eq!(new.tags, ["card:7", "column:todo", "column:doing"]);
        let data: serde_json::Value = serde_json::from_slice(&new.data).unwrap();
        assert_eq!(data["to"], "doing");
    }
}
