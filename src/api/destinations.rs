//! `/v1/destinations`: create, list, read, replace, patch, delete, and the operations
//! rotate-secret, pause, resume and test. The secret is shown only by create and rotate.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::json::{ApiJson, parse};
use super::{AppState, Page, bad_request};
use crate::error::ApiError;
use crate::ingest::TraceContext;
use crate::model::{DestinationId, DestinationInput, DestinationPatch, DestinationView};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/destinations", post(create).get(list))
        .route(
            "/v1/destinations/{id}",
            get(read).put(replace).patch(patch).delete(remove),
        )
        .route("/v1/destinations/{id}/rotate-secret", post(rotate_secret))
        .route("/v1/destinations/{id}/pause", post(pause))
        .route("/v1/destinations/{id}/resume", post(resume))
        .route("/v1/destinations/{id}/test", post(send_test))
}

fn destination_id(raw: &str) -> Result<DestinationId, ApiError> {
    DestinationId::parse(raw)
        .map_err(|_| ApiError::NotFound(format!("destination {raw} not found")))
}

/// Create a destination; the answer holds its signing secret, shown this once.
#[utoipa::path(post, path = "/v1/destinations", request_body = DestinationInput,
    responses((status = 201, body = DestinationView), (status = 400), (status = 409)))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<DestinationInput>,
) -> Result<Response, ApiError> {
    let (destination, key) = state.destinations.create(input).await?;
    let mut view = destination.view();
    view.secret = Some(key.expose());
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationList {
    pub data: Vec<DestinationView>,
    pub next_cursor: Option<String>,
}

/// List destinations by id, paged.
#[utoipa::path(get, path = "/v1/destinations", params(Page),
    responses((status = 200, body = DestinationList)))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<Page>, QueryRejection>,
) -> Result<axum::Json<DestinationList>, ApiError> {
    let Query(page) = query.map_err(bad_request)?;
    let (items, next_cursor) = state
        .destinations
        .list(
            page.tenant()?.as_ref(),
            page.cursor.as_deref(),
            page.limit()?,
        )
        .await?;
    Ok(axum::Json(DestinationList {
        data: items.iter().map(|d| d.view()).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/destinations/{id}",
    responses((status = 200, body = DestinationView), (status = 404)))]
pub async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<DestinationView>, ApiError> {
    let id = destination_id(&id)?;
    let (destination, _) = state
        .destinations
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("destination {id} not found")))?;
    let mut view = destination.view();
    view.circuit = Some(state.flow.circuits.view(id.as_str()));
    Ok(axum::Json(view))
}

/// Replace a destination's settings (not its id, tenant or secrets).
#[utoipa::path(put, path = "/v1/destinations/{id}", request_body = DestinationInput,
    responses((status = 200, body = DestinationView), (status = 400), (status = 404)))]
pub async fn replace(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<DestinationInput>,
) -> Result<axum::Json<DestinationView>, ApiError> {
    let id = destination_id(&id)?;
    Ok(axum::Json(
        state.destinations.replace(&id, input).await?.view(),
    ))
}

/// Change some settings of a destination.
#[utoipa::path(patch, path = "/v1/destinations/{id}", request_body = DestinationPatch,
    responses((status = 200, body = DestinationView), (status = 400), (status = 404)))]
pub async fn patch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<DestinationPatch>,
) -> Result<axum::Json<DestinationView>, ApiError> {
    let id = destination_id(&id)?;
    Ok(axum::Json(
        state.destinations.patch(&id, input).await?.view(),
    ))
}

/// Delete a destination and its consumer; events waiting for it are dropped with it.
#[utoipa::path(delete, path = "/v1/destinations/{id}",
    responses((status = 204), (status = 404)))]
pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = destination_id(&id)?;
    state.destinations.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The new secret (`whsec_<base64>`); generated when absent.
    pub secret: Option<String>,
    /// How long the old secrets keep signing, seconds (default 86400, 0 = stop now).
    pub grace_secs: Option<u64>,
}

/// Start signing with a new secret; the old one keeps signing during the grace period.
#[utoipa::path(post, path = "/v1/destinations/{id}/rotate-secret", request_body = Option<RotateSecret>,
    responses((status = 200, body = DestinationView), (status = 404)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<DestinationView>, ApiError> {
    let id = destination_id(&id)?;
    let request: RotateSecret = if body.iter().all(u8::is_ascii_whitespace) {
        RotateSecret::default()
    } else {
        parse(&body)?
    };
    let grace = Duration::from_secs(
        request
            .grace_secs
            .unwrap_or(crate::destinations::ROTATION_GRACE.as_secs())
            .min(30 * 86_400),
    );
    let (destination, key) = state
        .destinations
        .rotate_secret(&id, request.secret, grace)
        .await?;
    let mut view = destination.view();
    view.secret = Some(key.expose());
    Ok(axum::Json(view))
}

/// Stop sending to the destination; its events wait in the stream.
#[utoipa::path(post, path = "/v1/destinations/{id}/pause",
    responses((status = 200, body = DestinationView), (status = 404)))]
pub async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<DestinationView>, ApiError> {
    let id = destination_id(&id)?;
    Ok(axum::Json(
        state.destinations.set_paused(&id, true).await?.view(),
    ))
}

/// Send again, starting with what waited during the pause.
#[utoipa::path(post, path = "/v1/destinations/{id}/resume",
    responses((status = 200, body = DestinationView), (status = 404)))]
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<DestinationView>, ApiError> {
    let id = destination_id(&id)?;
    Ok(axum::Json(
        state.destinations.set_paused(&id, false).await?.view(),
    ))
}

/// Send a `hookstream.test` event to this destination only.
#[utoipa::path(post, path = "/v1/destinations/{id}/test",
    responses((status = 202, body = crate::ingest::Accepted), (status = 404)))]
pub async fn send_test(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = destination_id(&id)?;
    let (destination, _) = state
        .destinations
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("destination {id} not found")))?;
    let event = crate::destinations::test_event(&destination);
    let accepted = state
        .ingestor
        .ingest(event, None, &TraceContext::default())
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(accepted)).into_response())
}
