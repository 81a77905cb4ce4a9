//! Shared by every backend's test file: many people moving cards at once, and the
//! checks that the board kept its rules.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use foldstore_core::{CommandError, DomainEvent, EventFilter, EventStore, ReadAllOptions};
use kanban::board::{BoardError, CardEvent, CardId, Column, WIP_LIMIT};
use kanban::service::Board;
use kanban::view::{BoardView, live_board};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The seed: `FOLDSTORE_KANBAN_SEED` to replay a run, else a fixed one.
pub fn seed() -> u64 {
    std::env::var("FOLDSTORE_KANBAN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b61_6e62)
}

/// 20 cards, then 16 people making 40 moves each at once, most of them into "doing";
/// one move in 160 archives the card instead. Then, from the log alone: "doing" never
/// held more than the limit at any point of `$all`; every move left the column the
/// card was in; nothing happened to an archived card; and the live view equals the
/// log folded again.
pub async fn assert_board_holds(backend: &str, store: Arc<dyn EventStore>) {
    let seed = seed();
    let board = Board::new(store.clone());
    let view = live_board(store.clone());
    let mut cards = Vec::new();
    for n in 0..20 {
        cards.push(board.add(&format!("card {n}")).await.expect("add a card"));
    }
    let mut people = Vec::new();
    for person in 0..16u64 {
        let (board, cards, backend) = (board.clone(), cards.clone(), backend.to_owned());
        people.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ person.wrapping_mul(0x9e37_79b9));
            let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
            for _ in 0..40 {
                let card = cards[rng.random_range(0..cards.len())];
                let result = if rng.random_ratio(1, 160) {
                    board.archive(card).await
                } else {
                    let to = match rng.random_range(0..4) {
                        0 => Column::Todo,
                        3 => Column::Done,
                        _ => Column::Doing,
                    };
                    board.move_card(card, to).await
                };
                let answer = match result {
                    Ok(()) => "done",
                    Err(CommandError::Rejected(BoardError::WipLimit(_))) => "wip_limit",
                    Err(CommandError::Rejected(BoardError::Archived(_))) => "archived",
                    Err(e) => panic!("{backend} (seed {seed}): {e}"),
                };
                *counts.entry(answer).or_default() += 1;
            }
            counts
        }));
    }
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for person in people {
        for (k, v) in person.await.expect("a person's task") {
            *counts.entry(k).or_default() += v;
        }
    }

    // The log, in the order of $all.
    let log = store
        .read_all(ReadAllOptions::forwards().filter(EventFilter::category("card").unwrap()))
        .await
        .expect("read the log");
    let mut column: BTreeMap<CardId, Column> = BTreeMap::new();
    let mut archived: Vec<CardId> = Vec::new();
    let mut doing = 0usize;
    let mut most_doing = 0usize;
    for recorded in &log {
        let event = CardEvent::from_recorded(recorded).expect("a card event");
        let card = event.card();
        assert!(
            !archived.contains(&card),
            "card {card} changed after it was archived"
        );
        match event {
            CardEvent::Added { column: c, .. } => {
                assert!(column.insert(card, c).is_none(), "card {card} added twice");
            }
            CardEvent::Moved { from, to, .. } => {
                assert_eq!(
                    column.get(&card),
                    Some(&from),
                    "card {card} moved from where it was not"
                );
                assert_ne!(from, to, "card {card} moved nowhere");
                column.insert(card, to);
                doing =
                    doing + usize::from(to == Column::Doing) - usize::from(from == Column::Doing);
            }
            CardEvent::Archived { from, .. } => {
                assert_eq!(
                    column.remove(&card),
                    Some(from),
                    "card {card} archived from where it was not"
                );
                archived.push(card);
                doing -= usize::from(from == Column::Doing);
            }
        }
        assert!(
            doing <= WIP_LIMIT,
            "{backend} (seed {seed}): \"doing\" held {doing} cards at {}",
            recorded.position
        );
        most_doing = most_doing.max(doing);
    }

    // The live view catches up with the last event and matches the log.
    let last = log.last().expect("events").position;
    let live = tokio::time::timeout(Duration::from_secs(30), view.wait_for(last))
        .await
        .expect("the live view caught up");
    let mut rebuilt = BoardView::default();
    log.iter().for_each(|e| rebuilt.apply(e));
    assert_eq!(live.view, rebuilt, "the live view against the log");
    for c in Column::ALL {
        let ids: Vec<CardId> = live.view.column(c).iter().map(|v| v.id).collect();
        let expected: Vec<CardId> = column
            .iter()
            .filter(|&(_, &col)| col == c)
            .map(|(&id, _)| id)
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, expected, "column {c} in the live view");
    }

    let _ = writeln!(
        std::io::stderr(),
        "{backend} seed {seed}: {counts:?}, {} events, most in doing {most_doing}",
        log.len()
    );
    assert!(
        counts.get("wip_limit").copied().unwrap_or(0) > 0,
        "no move met the limit: {counts:?}"
    );
    assert_eq!(
        most_doing, WIP_LIMIT,
        "\"doing\" never filled up, so the limit went untested"
    );
}
