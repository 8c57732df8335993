//! The OpenAPI document, generated from the handlers and types.

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;

use super::AppState;
use super::{api_keys, destinations, dlq, events, health, stats};

/// Every error answer: `{"error":{"code","message"}}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // a schema only: the body is built by `ApiError::body`
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Stable, snake_case: `unauthorized`, `forbidden`, `not_found`, `invalid_json`, …
    pub code: String,
    pub message: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookstream",
        description = "Webhook delivery on NATS JetStream"
    ),
    paths(
        events::post_event,
        events::post_batch,
        events::get_event,
        events::list_events,
        events::get_attempts,
        events::resend,
        destinations::create,
        destinations::list,
        destinations::read,
        destinations::replace,
        destinations::patch,
        destinations::remove,
        destinations::rotate_secret,
        destinations::pause,
        destinations::resume,
        destinations::send_test,
        dlq::list,
        dlq::read,
        dlq::remove,
        dlq::replay,
        dlq::purge,
        stats::stats,
        health::healthz,
        health::readyz,
        health::metrics,
        api_keys::create_key,
        api_keys::list_keys,
        api_keys::delete_key,
    ),
    components(schemas(
        crate::model::NewEvent,
        crate::model::DestinationInput,
        crate::model::DestinationPatch,
        crate::model::DestinationView,
        crate::model::AttemptRecord,
        crate::ingest::Accepted,
        events::BatchRequest,
        events::BatchItem,
        events::EventView,
        events::EventList,
        events::AttemptsView,
        events::ResendBody,
        events::ResendAnswer,
        events::ResentView,
        destinations::RotateSecret,
        destinations::DestinationList,
        dlq::DeadLetterView,
        dlq::DeadLetterList,
        dlq::DeadLetterSelection,
        dlq::ReplayBody,
        dlq::ReplayAnswer,
        dlq::PurgeAnswer,
        dlq::SkippedView,
        stats::StatsList,
        api_keys::NewApiKey,
        api_keys::ApiKeyView,
        api_keys::ApiKeyList,
        crate::access::Role,
        ErrorBody,
        ErrorDetail,
    ))
)]
pub struct ApiDoc;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/openapi.json",
        get(|| async { axum::Json(ApiDoc::openapi()) }),
    )
}
