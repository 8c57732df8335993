//! The OpenAPI document, generated from the handlers and types, then completed by
//! [`Completed`] so that client generators accept it: every `/v1` operation carries the
//! bearer security scheme and the error answers it can give (401, 403, 400, 503, 404 with
//! an id, 413 and 415 with a body), each with the error schema; `{id}` path parameters
//! are declared. A test validates the result (`tests/it/openapi.rs`).

use axum::Router;
use axum::routing::get;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, ObjectBuilder, Ref, RefOr, Required, Type};
use utoipa::{Modify, OpenApi};

use super::AppState;
use super::{api_keys, destinations, dlq, events, health, stats, uploads};

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
    modifiers(&Completed),
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
        uploads::create,
        uploads::read,
        uploads::list,
        uploads::errors,
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
        events::BatchAnswer,
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
        uploads::UploadAccepted,
        uploads::UploadView,
        uploads::UploadList,
        uploads::UploadErrors,
        crate::files::RejectedLine,
        crate::files::Status,
    ))
)]
pub struct ApiDoc;

/// The security scheme's name in the document.
const BEARER: &str = "bearer";

/// Completes what the annotations leave out, in one place for every route.
struct Completed;

impl Modify for Completed {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            BEARER.into(),
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                complete(path, operation);
            }
        }
    }
}

fn complete(path: &str, op: &mut Operation) {
    let guarded = path.starts_with("/v1/");
    let bearer = SecurityRequirement::new(BEARER, Vec::<String>::new());
    op.security = Some(match path {
        _ if guarded => vec![bearer],
        // Behind a key only when api.auth.protect_metrics.
        "/metrics" => vec![SecurityRequirement::default(), bearer],
        _ => vec![SecurityRequirement::default()],
    });
    if path.contains("{id}") {
        let params = op.parameters.get_or_insert_with(Vec::new);
        if !params.iter().any(|p| p.name == "id") {
            params.push(
                ParameterBuilder::new()
                    .name("id")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .build(),
            );
        }
    }
    let mut errors: Vec<(&str, &str)> = Vec::new();
    if guarded {
        errors.extend([
            ("400", "Invalid request"),
            (
                "401",
                "No API key, or an unknown one (WWW-Authenticate: Bearer)",
            ),
            (
                "403",
                "The key's role may not use this route, or names another tenant",
            ),
            (
                "503",
                "NATS unavailable or the request timed out; see Retry-After",
            ),
        ]);
        if path.contains("{id}") {
            errors.push(("404", "Unknown id, or one of another tenant"));
        }
        if op.request_body.is_some() {
            errors.push(("413", "Body over api.body_limit_bytes"));
            errors.push(("415", "Not application/json"));
        }
    } else if path == "/metrics" {
        errors.extend([
            ("401", "api.auth.protect_metrics and no or an unknown key"),
            ("403", "api.auth.protect_metrics and not an admin key"),
        ]);
    }
    for (status, description) in errors {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(ResponseBuilder::new().description(description).build()));
    }
    // Every error answer has the error shape.
    for (status, response) in op.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if status.starts_with(['4', '5']) && status != "503" || status == "503" && guarded {
            response.content.insert(
                "application/json".into(),
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            );
        }
        if response.description.is_empty() {
            response.description = if status.starts_with('2') {
                "Success".into()
            } else {
                "Error".into()
            };
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/openapi.json",
        get(|| async { axum::Json(ApiDoc::openapi()) }),
    )
}
