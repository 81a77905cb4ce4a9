//! The web app: the page, the live board over server-sent events, and a small JSON
//! API for the page's buttons. Errors are RFC 9457 problem+json with a stable `code`.
//!
//! | route | does |
//! |---|---|
//! | `GET /` | the page |
//! | `GET /board` | the board now, as JSON |
//! | `GET /board/live` | the board as server-sent events: now, then after every change |
//! | `POST /cards` `{"title": ".."}` | adds a card to "todo": 201 `{"id": n}` |
//! | `POST /cards/{id}/move` `{"to": "doing"}` | moves it: 204; 409 `wip_limit` when "doing" is full |
//! | `POST /cards/{id}/archive` | takes it off the board: 204 |

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use foldstore_core::{CommandError, EventStore};
use foldstore_server::error::ApiError;
use foldstore_server::live_view::LiveView;
use serde::Deserialize;
use serde_json::json;

use crate::board::{BoardError, CardId, Column};
use crate::service::{Board, BoardCommandError};
use crate::view::{BoardView, live_board};

/// The page: plain HTML and a little JavaScript, no build step.
const PAGE: &str = include_str!("page.html");

#[derive(Clone)]
struct App {
    board: Board,
    view: LiveView<BoardView>,
}

/// The app's routes over `store`. Needs a Tokio runtime (the live board follows the
/// store on a task of its own).
///
/// ```
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let app = kanban::app::router(Arc::new(foldstore_core::InMemoryStore::new()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # drop(listener);
/// // axum::serve(listener, app).await
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
pub fn router(store: Arc<dyn EventStore>) -> Router {
    let app = App {
        board: Board::new(store.clone()),
        view: live_board(store),
    };
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/board", get(board))
        .route("/board/live", get(live))
        .route("/cards", post(add))
        .route("/cards/{id}/move", post(move_card))
        .route("/cards/{id}/archive", post(archive))
        .with_state(app)
}

async fn board(State(app): State<App>) -> Json<BoardView> {
    Json(app.view.current().view.clone())
}

async fn live(State(app): State<App>) -> impl IntoResponse {
    app.view.sse()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCard {
    title: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveTo {
    to: Column,
}

async fn add(
    State(app): State<App>,
    body: Result<Json<NewCard>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(card) = body.map_err(bad_body)?;
    let id = app.board.add(&card.title).await.map_err(problem)?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id.0 }))).into_response())
}

async fn move_card(
    State(app): State<App>,
    Path(id): Path<u32>,
    body: Result<Json<MoveTo>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(to) = body.map_err(bad_body)?;
    app.board
        .move_card(CardId(id), to.to)
        .await
        .map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn archive(State(app): State<App>, Path(id): Path<u32>) -> Result<StatusCode, ApiError> {
    app.board.archive(CardId(id)).await.map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

fn bad_body(rejection: JsonRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_body",
        format!(
            "{}; send JSON such as {{\"title\": \"...\"}} or {{\"to\": \"doing\"}}",
            rejection.body_text()
        ),
    )
}

/// Each refusal with its own status and stable code; a store that failed or stayed
/// contended is a 503 worth retrying.
fn problem(e: BoardCommandError) -> ApiError {
    let (status, code, title) = match &e {
        CommandError::Rejected(BoardError::UnknownCard(_)) => {
            (StatusCode::NOT_FOUND, "unknown_card", "No such card")
        }
        CommandError::Rejected(BoardError::AlreadyExists(_)) => (
            StatusCode::CONFLICT,
            "card_exists",
            "The card exists already",
        ),
        CommandError::Rejected(BoardError::BadTitle) => (
            StatusCode::BAD_REQUEST,
            "bad_title",
            "The card's title is empty or too long",
        ),
        CommandError::Rejected(BoardError::Archived(_)) => (
            StatusCode::CONFLICT,
            "card_archived",
            "The card was archived",
        ),
        CommandError::Rejected(BoardError::WipLimit(_)) => (
            StatusCode::CONFLICT,
            "wip_limit",
            "The work-in-progress limit is reached",
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The board could not be changed right now",
        ),
    };
    let detail = match e {
        CommandError::Rejected(reason) => reason.to_string(),
        other => format!("{other}; try again"),
    };
    ApiError::new(status, code, detail).with_title(title)
}
