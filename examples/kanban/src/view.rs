//! The board as the page shows it, folded from the card events and kept live in the
//! server's memory by [`foldstore_server::live_view::LiveView`].

use std::collections::BTreeMap;
use std::sync::Arc;

use foldstore_core::{DomainEvent, EventFilter, EventStore, RecordedEvent};
use foldstore_server::live_view::LiveView;
use serde::{Serialize, Serializer};

use crate::board::{CardEvent, CardId, Column, WIP_LIMIT};

/// A card on the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardView {
    /// Its number.
    pub id: CardId,
    /// What it says.
    pub title: String,
    /// Its column.
    #[serde(skip)]
    pub column: Column,
}

/// The board: the cards on it (archived ones leave), sent as
/// `{"columns": {"todo": [...], "doing": [...], "done": [...]}, "wip_limit": 3}`, each
/// column in the order cards arrived in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoardView {
    /// The cards by number.
    pub cards: BTreeMap<CardId, CardView>,
    /// Arrival order: a counter per card, bumped on every move.
    order: BTreeMap<CardId, u64>,
    next: u64,
}

impl BoardView {
    /// Folds one event in; other events are skipped.
    pub fn apply(&mut self, event: &RecordedEvent) {
        let Ok(event) = CardEvent::from_recorded(event) else {
            return;
        };
        self.next += 1;
        match event {
            CardEvent::Added {
                card,
                title,
                column,
            } => {
                self.cards.insert(
                    card,
                    CardView {
                        id: card,
                        title,
                        column,
                    },
                );
                self.order.insert(card, self.next);
            }
            CardEvent::Moved { card, to, .. } => {
                if let Some(c) = self.cards.get_mut(&card) {
                    c.column = to;
                    self.order.insert(card, self.next);
                }
            }
            CardEvent::Archived { card, .. } => {
                self.cards.remove(&card);
                self.order.remove(&card);
            }
        }
    }

    /// The cards in `column`, in the order they arrived there.
    pub fn column(&self, column: Column) -> Vec<&CardView> {
        let mut cards: Vec<&CardView> =
            self.cards.values().filter(|c| c.column == column).collect();
        cards.sort_by_key(|c| self.order.get(&c.id));
        cards
    }
}

impl Serialize for BoardView {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            columns: BTreeMap<String, Vec<&'a CardView>>,
            wip_limit: usize,
        }
        Wire {
            columns: Column::ALL
                .iter()
                .map(|&c| (c.to_string(), self.column(c)))
                .collect(),
            wip_limit: WIP_LIMIT,
        }
        .serialize(serializer)
    }
}

/// The board kept live: folded from the start of `$all`, then following new events.
pub fn live_board(store: Arc<dyn EventStore>) -> LiveView<BoardView> {
    LiveView::spawn(
        store,
        EventFilter::category("card").expect("a valid category"),
        BoardView::default(),
        BoardView::apply,
    )
}
