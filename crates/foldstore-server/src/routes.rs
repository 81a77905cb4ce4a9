//! The route table. Every route is registered through `utoipa_axum::routes!` from the
//! handler's `#[utoipa::path]` attribute, so the router and the OpenAPI document
//! ([`crate::openapi()`]) are built from the same list and cannot disagree.

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::ApiDoc;
use crate::{AppState, catalog, handlers, metrics, openapi, persistent, sse, ui};

/// Every route with its documentation.
pub(crate) fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::health))
        .routes(routes!(
            handlers::read_stream,
            handlers::append,
            handlers::delete_stream
        ))
        .routes(routes!(handlers::get_metadata, handlers::put_metadata))
        .routes(routes!(sse::subscribe_stream))
        .routes(routes!(handlers::read_all))
        .routes(routes!(sse::subscribe_all))
        .routes(routes!(handlers::read_category))
        .routes(routes!(persistent::list_subscriptions))
        .routes(routes!(persistent::list_stream_subscriptions))
        .routes(routes!(
            persistent::create_subscription,
            persistent::update_subscription,
            persistent::get_subscription,
            persistent::delete_subscription
        ))
        .routes(routes!(persistent::replay_parked))
        .routes(routes!(persistent::poll_messages))
        .routes(routes!(persistent::ack_messages))
        .routes(routes!(persistent::nack_messages))
        .routes(routes!(persistent::subscribe_group))
        .routes(routes!(metrics::metrics))
        .routes(routes!(catalog::stats))
        .routes(routes!(catalog::list_streams))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(ui::index))
        .routes(routes!(ui::asset))
}
