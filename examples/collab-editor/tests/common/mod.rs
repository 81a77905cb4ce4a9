//! Shared by every backend's test file: many writers editing one document at once,
//! each from a version that may be stale, and the checks that every edit landed
//! where its writer meant.

#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use collab_editor::document::{CharId, Document, Edit};
use collab_editor::service::{Documents, stream};
use collab_editor::view::live_document;
use foldstore_core::EventStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The seed: `FOLDSTORE_EDITOR_SEED` to replay a run, else a fixed one.
pub fn seed() -> u64 {
    std::env::var("FOLDSTORE_EDITOR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xed17)
}

/// What a writer did: the token it inserted and the character it went after, or the
/// characters it deleted.
enum Done {
    Inserted {
        token: String,
        after: Option<CharId>,
        revision: u64,
    },
    Deleted(Vec<CharId>),
}

/// 12 writers make 25 edits each on one document at once. Each reads the document,
/// waits a moment (others edit meanwhile), then either inserts a token of its own
/// after a character it saw, or deletes one to three characters it saw. Then, from
/// the document folded from the log: every token is there once, its characters in
/// order, after the character its writer chose; exactly the characters someone
/// deleted are deleted; a token nobody deleted a character of reads whole, in order,
/// in the text; and the live view equals the fold.
pub async fn assert_edits_land(backend: &str, store: Arc<dyn EventStore>) {
    let seed = seed();
    let docs = Documents::new(store.clone());
    let notes = stream("notes").unwrap();
    let view = live_document(store.clone(), notes.clone());
    let first = Edit {
        author: "setup".into(),
        after: None,
        text: "The quick brown fox jumps over the lazy dog.".into(),
        deleted: vec![],
    };
    docs.edit(&notes, &first).await.expect("the first edit");
    let mut writers = Vec::new();
    for w in 0..12u64 {
        let (docs, notes) = (docs.clone(), notes.clone());
        writers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ w.wrapping_mul(0x9e37_79b9));
            let mut done = Vec::new();
            for n in 0..25 {
                let seen = docs.load(&notes).await.expect("load");
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..3))).await;
                let visible: Vec<CharId> = seen
                    .chars
                    .iter()
                    .filter(|c| !c.deleted)
                    .map(|c| c.id)
                    .collect();
                let edit = if rng.random_ratio(2, 3) || visible.len() < 10 {
                    let after = match rng.random_range(0..=visible.len()) {
                        0 => None,
                        i => Some(visible[i - 1]),
                    };
                    Edit {
                        author: format!("w{w}"),
                        after,
                        text: format!("<{w}.{n}>"),
                        deleted: vec![],
                    }
                } else {
                    let at = rng.random_range(0..visible.len() - 3);
                    let count = rng.random_range(1..=3);
                    Edit {
                        author: format!("w{w}"),
                        after: None,
                        text: String::new(),
                        deleted: visible[at..at + count].to_vec(),
                    }
                };
                let revision = docs
                    .edit(&notes, &edit)
                    .await
                    .expect("an edit of what the writer saw");
                done.push(if edit.text.is_empty() {
                    Done::Deleted(edit.deleted)
                } else {
                    Done::Inserted {
                        token: edit.text,
                        after: edit.after,
                        revision,
                    }
                });
            }
            done
        }));
    }
    let mut done = Vec::new();
    for w in writers {
        done.extend(w.await.expect("a writer"));
    }

    let doc: Document = docs.load(&notes).await.expect("the final document");
    let index: HashMap<CharId, usize> = doc
        .chars
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id, i))
        .collect();
    assert_eq!(index.len(), doc.chars.len(), "a character id twice");
    let mut deleted: HashSet<CharId> = HashSet::new();
    let mut tokens = Vec::new();
    for d in &done {
        match d {
            Done::Deleted(ids) => deleted.extend(ids.iter().copied()),
            Done::Inserted {
                token,
                after,
                revision,
            } => {
                let ids: Vec<CharId> = (0..token.chars().count() as u32)
                    .map(|i| CharId(*revision, i))
                    .collect();
                let at: Vec<usize> = ids.iter().map(|id| index[id]).collect();
                assert!(
                    at.windows(2).all(|p| p[0] < p[1]),
                    "token {token}'s characters out of order"
                );
                let text: String = ids.iter().map(|id| doc.chars[index[id]].ch).collect();
                assert_eq!(&text, token, "token {token} stored as {text}");
                if let Some(a) = after {
                    assert!(
                        index[a] < at[0],
                        "token {token} before the character it went after"
                    );
                }
                tokens.push((token.clone(), ids));
            }
        }
    }
    let tombstones: HashSet<CharId> = doc
        .chars
        .iter()
        .filter(|c| c.deleted)
        .map(|c| c.id)
        .collect();
    assert_eq!(
        tombstones, deleted,
        "exactly the characters someone deleted are deleted"
    );
    let text = doc.text();
    let mut whole = 0;
    for (token, ids) in &tokens {
        if ids.iter().all(|id| !deleted.contains(id)) {
            whole += 1;
            let mut rest = text.chars();
            assert!(
                token.chars().all(|t| rest.by_ref().any(|c| c == t)),
                "token {token} does not read in order in the text"
            );
        }
    }
    let live = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let state = view.current();
            if state.view.0.edits == doc.edits {
                return state.view.0.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the live view caught up");
    assert_eq!(live, doc, "the live view against the fold");
    let _ = writeln!(
        std::io::stderr(),
        "{backend} seed {seed}: {} edits, {} tokens ({whole} whole), {} characters deleted, text of {} characters",
        doc.edits,
        tokens.len(),
        deleted.len(),
        text.chars().count()
    );
    assert!(
        whole > 0 && whole < tokens.len(),
        "some tokens should survive whole and some lose characters"
    );
}
