//! The OpenAPI document, generated from the handlers and types.

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;

use super::AppState;
use super::{destinations, dlq, events, health, stats};

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
    ))
)]
pub struct ApiDoc;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/openapi.json",
        get(|| async { axum::Json(ApiDoc::openapi()) }),
    )
}
