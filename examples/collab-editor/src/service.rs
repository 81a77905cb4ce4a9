//! Edits through the toolkit's [`CommandHandler`]: load the document, check the edit
//! names characters it has, and append with the revision read (the inserted
//! characters' ids are that revision). When someone else's edit came first, load and
//! append again: the edit names characters, so it still means what its author meant.

use std::sync::Arc;

use foldstore_core::{
    CommandContext, CommandError, CommandHandler, EventStore, RetryPolicy, StreamName,
};

use crate::document::{Document, DocumentDecider, Edit, EditError};

/// A failed edit.
pub type EditCommandError = CommandError<EditError>;

/// Why a document name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document names are 1 to 40 lower-case letters, digits and '-'; got {0:?}")]
pub struct BadName(pub String);

/// The stream of document `name`: `doc-<name>`.
pub fn stream(name: &str) -> Result<StreamName, BadName> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then(|| StreamName::new(format!("doc-{name}")).ok())
        .flatten()
        .ok_or_else(|| BadName(name.to_owned()))
}

/// Edits over any event store. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use collab_editor::document::{CharId, Edit};
/// use collab_editor::service::{Documents, stream};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let docs = Documents::new(Arc::new(foldstore_core::InMemoryStore::new()));
/// let notes = stream("notes")?;
/// let edit = |after, text: &str| Edit { author: "ada".into(), after, text: text.into(), deleted: vec![] };
/// let first = docs.edit(&notes, &edit(None, "ac")).await?;
/// docs.edit(&notes, &edit(Some(CharId(first, 0)), "b")).await?;
/// assert_eq!(docs.load(&notes).await?.text(), "abc");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Documents {
    handler: Arc<CommandHandler<DocumentDecider>>,
}

impl Documents {
    /// Edits over `store`. Many people typing into one document contend for its
    /// stream, so an edit gets up to 100 attempts, with short waits.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        let retry = RetryPolicy::contended();
        Self {
            handler: Arc::new(CommandHandler::new(store, DocumentDecider).with_retry(retry)),
        }
    }

    /// Applies `edit` to the document in `stream`; returns the revision of the stored
    /// edit, which is the first part of its inserted characters' ids.
    pub async fn edit(&self, stream: &StreamName, edit: &Edit) -> Result<u64, EditCommandError> {
        let outcome = self
            .handler
            .handle(stream, edit, &CommandContext::new())
            .await?;
        Ok(outcome
            .next_expected_revision
            .expect("an applied edit leaves the stream with a revision"))
    }

    /// The document in `stream` now.
    pub async fn load(&self, stream: &StreamName) -> Result<Document, EditCommandError> {
        Ok(self.handler.load(stream).await?.state)
    }
}
