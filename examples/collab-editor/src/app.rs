//! The web app: the editor page, each document live over server-sent events, and the
//! edits API. Errors are RFC 9457 problem+json with a stable `code`.
//!
//! | route | does |
//! |---|---|
//! | `GET /`, `GET /d/{name}` | the editor, on document `main` or `name` |
//! | `GET /api/docs/{name}` | the document now, as JSON (read from the store) |
//! | `GET /api/docs/{name}/live` | the document as server-sent events: now, then after every edit |
//! | `POST /api/docs/{name}/edits` | an edit (`{"author", "after", "text", "deleted"}`): 200 `{"revision": n}` |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use foldstore_core::{CommandError, EventStore};
use foldstore_server::error::ApiError;
use foldstore_server::live_view::LiveView;
use serde_json::{Value, json};

use crate::document::{Edit, EditError};
use crate::service::{Documents, EditCommandError, stream};
use crate::view::{DocumentView, live_document};

/// The page: plain HTML and JavaScript, no build step.
const PAGE: &str = include_str!("page.html");

#[derive(Clone)]
struct App {
    store: Arc<dyn EventStore>,
    documents: Documents,
    /// One live view per open document, made on first use.
    views: Arc<Mutex<HashMap<String, LiveView<DocumentView>>>>,
}

impl App {
    fn view(&self, name: &str) -> Result<LiveView<DocumentView>, ApiError> {
        let stream = stream(name).map_err(bad_name)?;
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        Ok(views
            .entry(name.to_owned())
            .or_insert_with(|| live_document(self.store.clone(), stream))
            .clone())
    }
}

/// The app's routes over `store`. Needs a Tokio runtime.
///
/// ```
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let app = collab_editor::app::router(Arc::new(foldstore_core::InMemoryStore::new()));
/// // axum::serve(tokio::net::TcpListener::bind("127.0.0.1:3001").await?, app).await
/// # let _ = app;
/// # }
/// ```
pub fn router(store: Arc<dyn EventStore>) -> Router {
    let app = App {
        documents: Documents::new(store.clone()),
        store,
        views: Arc::default(),
    };
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/d/{name}", get(|| async { Html(PAGE) }))
        .route("/api/docs/{name}", get(current))
        .route("/api/docs/{name}/live", get(live))
        .route("/api/docs/{name}/edits", post(edit))
        .with_state(app)
}

async fn current(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<DocumentView>, ApiError> {
    // Read from the store, not the live view: a view made by this request would not
    // have caught up yet.
    let stream = stream(&name).map_err(bad_name)?;
    let doc = app.documents.load(&stream).await.map_err(problem)?;
    Ok(Json(DocumentView(doc)))
}

async fn live(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(app.view(&name)?.sse())
}

async fn edit(
    State(app): State<App>,
    Path(name): Path<String>,
    body: Result<Json<Edit>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let stream = stream(&name).map_err(bad_name)?;
    let Json(edit) = body.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!(
                "{}; send {{\"author\": \"..\", \"after\": [r, i] or null, \"text\": \"..\", \"deleted\": [[r, i], ..]}}",
                rejection.body_text()
            ),
        )
    })?;
    let revision = app.documents.edit(&stream, &edit).await.map_err(problem)?;
    Ok(Json(json!({ "revision": revision })))
}

fn bad_name(e: crate::service::BadName) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_document_name", e.to_string())
        .with_title("The document name is not valid")
}

fn problem(e: EditCommandError) -> ApiError {
    let (status, code, title) = match &e {
        CommandError::Rejected(EditError::UnknownChar(_)) => (
            StatusCode::CONFLICT,
            "unknown_char",
            "The edit names a character the document does not have",
        ),
        CommandError::Rejected(EditError::TooLong) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "edit_too_long",
            "The edit inserts too much text",
        ),
        CommandError::Rejected(_) => (
            StatusCode::BAD_REQUEST,
            "empty_edit",
            "The edit changes nothing",
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The document could not be changed right now",
        ),
    };
    let detail = match e {
        CommandError::Rejected(reason) => reason.to_string(),
        other => format!("{other}; try again"),
    };
    ApiError::new(status, code, detail).with_title(title)
}
