//! A document as the page sees it, kept live in the server's memory by
//! [`foldstore_server::live_view::LiveView`]: every character with its id, deleted
//! ones included (an edit may name them), and the revision.

use std::sync::Arc;

use foldstore_core::{DomainEvent, EventFilter, EventStore, RecordedEvent, StreamName};
use foldstore_server::live_view::LiveView;
use serde::{Serialize, Serializer};

use crate::document::{Document, DocumentEvent};

/// The document on the wire: `{"revision": n, "chars": [[r, i, "c", deleted], ...]}`,
/// where `revision` is the number of edits folded in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentView(pub Document);

impl Serialize for DocumentView {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire {
            revision: u64,
            chars: Vec<(u64, u32, char, bool)>,
        }
        Wire {
            revision: self.0.edits,
            chars: self
                .0
                .chars
                .iter()
                .map(|c| (c.id.0, c.id.1, c.ch, c.deleted))
                .collect(),
        }
        .serialize(serializer)
    }
}

/// Document `stream` kept live: folded from the start, then following new edits.
pub fn live_document(store: Arc<dyn EventStore>, stream: StreamName) -> LiveView<DocumentView> {
    let name = stream.as_str().to_owned();
    LiveView::spawn(
        store,
        EventFilter::stream_prefix(name.clone()),
        DocumentView::default(),
        move |view: &mut DocumentView, event: &RecordedEvent| {
            // The prefix also takes `doc-<name>-more`: keep this stream only.
            if event.stream.as_str() == name
                && let Ok(edit) = DocumentEvent::from_recorded(event)
            {
                view.0.apply(&edit);
            }
        },
    )
}
