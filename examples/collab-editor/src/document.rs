//! A text document that many people edit at once, as a decider ([`DocumentDecider`]).
//! No I/O.
//!
//! An edit names characters, not positions: "insert this text after character X",
//! "delete characters Y and Z". Every character gets an id when it is inserted (the
//! revision of the edit that inserted it and its index in that edit), and a deleted
//! character stays in the sequence as a tombstone, so an id always means the same
//! place. Two people who edit the same version at once both get what they meant: the
//! log puts their edits in one order, and each edit lands next to the characters it
//! named, wherever those have moved since.

use foldstore_core::DomainEvent;
use foldstore_core::decider::Decider;
use serde::{Deserialize, Serialize};

/// The most characters one edit inserts.
pub const MAX_INSERT: usize = 10_000;

/// A character's id: the stream revision of the edit that inserted it, and its index
/// in that edit's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CharId(pub u64, pub u32);

/// What happened to a document: one edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum DocumentEvent {
    /// Text was inserted after a character (or at the start), and characters were
    /// deleted. The inserted characters' ids are `CharId(revision, 0..)`, where
    /// `revision` is this event's revision in the document's stream.
    Edited {
        /// Who edited.
        author: String,
        /// The character the text goes after; `None`: the start of the document.
        after: Option<CharId>,
        /// The inserted text (may be empty).
        text: String,
        /// The deleted characters.
        deleted: Vec<CharId>,
    },
}

/// An edit someone asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    /// Who edits.
    pub author: String,
    /// The character the text goes after; `None`: the start.
    pub after: Option<CharId>,
    /// The text to insert (may be empty).
    pub text: String,
    /// The characters to delete (deleting one already deleted changes nothing).
    pub deleted: Vec<CharId>,
}

/// Why a document refused an edit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The edit names a character the document never had.
    #[error("character {0:?} is not in this document: edit a version you read from it")]
    UnknownChar(CharId),
    /// Too much text at once.
    #[error("an edit inserts at most {MAX} characters; split it", MAX = MAX_INSERT)]
    TooLong,
    /// Nothing to do.
    #[error("the edit inserts nothing and deletes nothing")]
    Empty,
}

/// One character of the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Char {
    /// Its id.
    pub id: CharId,
    /// The character.
    pub ch: char,
    /// Whether it was deleted (it stays, as a tombstone).
    pub deleted: bool,
}

/// The document: every character ever inserted, in document order, and the revision
/// of the last edit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    /// The characters, tombstones included.
    pub chars: Vec<Char>,
    /// The number of edits applied (the revision the next edit will have).
    pub edits: u64,
}

impl Document {
    /// The text a reader sees.
    pub fn text(&self) -> String {
        self.chars
            .iter()
            .filter(|c| !c.deleted)
            .map(|c| c.ch)
            .collect()
    }

    /// The index of character `id` in the sequence.
    fn index(&self, id: CharId) -> Option<usize> {
        self.chars.iter().position(|c| c.id == id)
    }

    /// Applies one edit, stored at revision `self.edits`.
    pub fn apply(&mut self, event: &DocumentEvent) {
        let DocumentEvent::Edited {
            after,
            text,
            deleted,
            ..
        } = event;
        let revision = self.edits;
        let at = match after {
            None => 0,
            Some(id) => self.index(*id).map_or(self.chars.len(), |i| i + 1),
        };
        let inserted = text.chars().enumerate().map(|(i, ch)| Char {
            id: CharId(revision, i as u32),
            ch,
            deleted: false,
        });
        self.chars.splice(at..at, inserted);
        for id in deleted {
            if let Some(i) = self.index(*id) {
                self.chars[i].deleted = true;
            }
        }
        self.edits += 1;
    }

    /// Decides an edit: every character it names must exist.
    pub fn decide(&self, edit: &Edit) -> Result<Vec<DocumentEvent>, EditError> {
        if edit.text.is_empty() && edit.deleted.is_empty() {
            return Err(EditError::Empty);
        }
        if edit.text.chars().count() > MAX_INSERT {
            return Err(EditError::TooLong);
        }
        for id in edit.after.iter().chain(&edit.deleted) {
            if self.index(*id).is_none() {
                return Err(EditError::UnknownChar(*id));
            }
        }
        Ok(vec![DocumentEvent::Edited {
            author: edit.author.clone(),
            after: edit.after,
            text: edit.text.clone(),
            deleted: edit.deleted.clone(),
        }])
    }
}

/// The document decider, for the toolkit's command handler: one document stream is
/// one [`Document`].
///
/// ```
/// use foldstore_core::decider::{Decider, fold};
/// use collab_editor::document::{CharId, DocumentDecider, DocumentEvent};
///
/// let edit = |after, text: &str, deleted: Vec<CharId>| DocumentEvent::Edited {
///     author: "ada".into(), after, text: text.into(), deleted,
/// };
/// // "helo", then two people fix it at once from the same version: one inserts the
/// // missing "l" after the first "l" (character 2 of edit 0), the other deletes "h"
/// // and inserts "H" at the start. Both edits name characters, so both land.
/// let doc = fold(&DocumentDecider, &[
///     edit(None, "helo", vec![]),
///     edit(Some(CharId(0, 2)), "l", vec![]),
///     edit(None, "H", vec![CharId(0, 0)]),
/// ]);
/// assert_eq!(doc.text(), "Hello");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DocumentDecider;

impl Decider for DocumentDecider {
    type Command = Edit;
    type Event = DocumentEvent;
    type State = Document;
    type Error = EditError;

    fn initial_state(&self) -> Document {
        Document::default()
    }

    fn decide(&self, edit: &Edit, doc: &Document) -> Result<Vec<DocumentEvent>, EditError> {
        doc.decide(edit)
    }

    fn evolve(&self, mut doc: Document, event: &DocumentEvent) -> Document {
        doc.apply(event);
        doc
    }
}

#[cfg(test)]
mod tests {
    use foldstore_core::testing::DeciderSpec;

    use super::*;

    fn edited(after: Option<CharId>, text: &str, deleted: Vec<CharId>) -> DocumentEvent {
        DocumentEvent::Edited {
            author: "t".into(),
            after,
            text: text.into(),
            deleted,
        }
    }

    #[test]
    fn an_edit_naming_a_deleted_character_still_lands_next_to_it() {
        let mut doc = Document::default();
        doc.apply(&edited(None, "abc", vec![]));
        doc.apply(&edited(None, "", vec![CharId(0, 1)])); // "ac"
        // Someone who still saw "abc" inserts after "b".
        doc.apply(&edited(Some(CharId(0, 1)), "X", vec![]));
        assert_eq!(doc.text(), "aXc");
    }

    #[test]
    fn concurrent_inserts_after_one_character_keep_each_text_whole() {
        let mut doc = Document::default();
        doc.apply(&edited(None, "ab", vec![]));
        doc.apply(&edited(Some(CharId(0, 0)), "123", vec![]));
        doc.apply(&edited(Some(CharId(0, 0)), "xyz", vec![]));
        assert_eq!(doc.text(), "axyz123b");
    }

    #[test]
    fn edits_naming_unknown_characters_or_doing_nothing_are_refused() {
        DeciderSpec::new(DocumentDecider)
            .given([edited(None, "ab", vec![])])
            .when(Edit {
                author: "t".into(),
                after: Some(CharId(7, 0)),
                text: "x".into(),
                deleted: vec![],
            })
            .then_error(EditError::UnknownChar(CharId(7, 0)));
        DeciderSpec::new(DocumentDecider)
            .when(Edit {
                author: "t".into(),
                after: None,
                text: String::new(),
                deleted: vec![],
            })
            .then_error(EditError::Empty);
    }
}
