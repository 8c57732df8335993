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

use super::access::Access;
use super::error::ApiError;
use super::json::{ApiJson, parse};
use super::{AppState, Page, bad_request};
use crate::ingest::TraceContext;
use crate::model::{
    Destination, DestinationId, DestinationInput, DestinationPatch, DestinationView,
};

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

fn not_found(id: &DestinationId) -> ApiError {
    ApiError::NotFound(format!("destination {id} not found"))
}

/// The destination, if it exists and is the key's: another tenant's is "not found" too.
async fn owned(
    state: &AppState,
    access: &Access,
    id: &DestinationId,
) -> Result<Destination, ApiError> {
    state
        .destinations
        .get(id)
        .await?
        .map(|(d, _)| d)
        .filter(|d| access.owns(d.tenant.as_str()))
        .ok_or_else(|| not_found(id))
}

/// Before a change: a tenant key may change its own destinations only. An admin's
/// change needs no extra read (the change itself answers 404 for an unknown id).
async fn check_owned(
    state: &AppState,
    access: &Access,
    id: &DestinationId,
) -> Result<(), ApiError> {
    if access.tenant().is_some() {
        owned(state, access, id).await?;
    }
    Ok(())
}

/// Create a destination; the answer holds its signing secret, shown this once.
#[utoipa::path(post, path = "/v1/destinations", operation_id = "create_destination", tag = "destinations", request_body = DestinationInput,
    responses((status = 201, body = DestinationView), (status = 400), (status = 409)))]
pub async fn create(
    State(state): State<AppState>,
    access: Access,
    ApiJson(mut input): ApiJson<DestinationInput>,
) -> Result<Response, ApiError> {
    input.tenant = access.scope(input.tenant.take())?;
    let (destination, key) = state.destinations.create(input).await?;
    access.audit(
        "destination.create",
        destination.tenant.as_str(),
        destination.id.as_str(),
    );
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
#[utoipa::path(get, path = "/v1/destinations", operation_id = "list_destinations", tag = "destinations", params(Page),
    responses((status = 200, body = DestinationList)))]
pub async fn list(
    State(state): State<AppState>,
    access: Access,
    query: Result<Query<Page>, QueryRejection>,
) -> Result<axum::Json<DestinationList>, ApiError> {
    let Query(page) = query.map_err(bad_request)?;
    let tenant = access.scope(page.tenant()?)?;
    let (items, next_cursor) = state
        .destinations
        .list(tenant.as_ref(), page.cursor.as_deref(), page.limit()?)
        .await?;
    Ok(axum::Json(DestinationList {
        data: items.iter().map(|d| d.view()).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/destinations/{id}", operation_id = "get_destination", tag = "destinations",
    responses((status = 200, body = DestinationView), (status = 404)))]
pub async fn read(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<axum::Json<DestinationView>, ApiError> {
    let id = destination_id(&id)?;
    let destination = owned(&state, &access, &id).await?;
    let mut view = destination.view();
    view.circuit = Some(state.flow.circuits.view(id.as_str()));
    Ok(axum::Json(view))
}

/// Replace a destination's settings (not its id, tenant or secrets).
#[utoipa::path(put, path = "/v1/destinations/{id}", operation_id = "replace_destination", tag = "destinations", request_body = DestinationInput,
    responses((status = 200, body = DestinationView), (status = 400), (status = 404)))]
pub async fn replace(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<DestinationInput>,
) -> Result<axum::Json<DestinationView>, ApiError> {
    let id = destination_id(&id)?;
    access.scope(input.tenant.clone())?;
    check_owned(&state, &access, &id).await?;
    let destination = state.destinations.replace(&id, input).await?;
    access.audit(
        "destination.replace",
        destination.tenant.as_str(),
        id.as_str(),
    );
    Ok(axum::Json(destination.view()))
}

/// Change some settings of a destination.
#[utoipa::path(patch, path = "/v1/destinations/{id}", operation_id = "patch_destination", tag = "destinations", request_body = DestinationPatch,
    responses((status = 200, body = DestinationView), (status = 400), (status = 404)))]
pub async fn patch(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<DestinationPatch>,
) -> Result<axum::Json<DestinationView>, ApiError> {
    let id = destination_id(&id)?;
    check_owned(&state, &access, &id).await?;
    let destination = state.destinations.patch(&id, input).await?;
    access.audit(
        "destination.patch",
        destination.tenant.as_str(),
        id.as_str(),
    );
    Ok(axum::Json(destination.view()))
}

/// Delete a destination and its consumer; events waiting for it are dropped with it.
#[utoipa::path(delete, path = "/v1/destinations/{id}", operation_id = "delete_destination", tag = "destinations",
    responses((status = 204), (status = 404)))]
pub async fn remove(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = destination_id(&id)?;
    check_owned(&state, &access, &id).await?;
    state.destinations.delete(&id).await?;
    access.audit(
        "destination.delete",
        access.tenant().map_or("*", |t| t.as_str()),
        id.as_str(),
    );
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
#[utoipa::path(post, path = "/v1/destinations/{id}/rotate-secret", operation_id = "rotate_destination_secret", tag = "destinations", request_body = Option<RotateSecret>,
    responses((status = 200, body = DestinationView), (status = 404)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<DestinationView>, ApiError> {
    let id = destination_id(&id)?;
    check_owned(&state, &access, &id).await?;
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
    access.audit(
        "destination.rotate_secret",
        destination.tenant.as_str(),
        id.as_str(),
    );
    let mut view = destination.view();
    view.secret = Some(key.expose());
    Ok(axum::Json(view))
}

/// Stop sending to the destination; its events wait in the stream.
#[utoipa::path(post, path = "/v1/destinations/{id}/pause", operation_id = "pause_destination", tag = "destinations",
    responses((status = 200, body = DestinationView), (status = 404)))]
pub async fn pause(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<axum::Json<DestinationView>, ApiError> {
    set_paused(state, access, id, true).await
}

async fn set_paused(
    state: AppState,
    access: Access,
    id: String,
    paused: bool,
) -> Result<axum::Json<DestinationView>, ApiError> {
    let id = destination_id(&id)?;
    check_owned(&state, &access, &id).await?;
    let destination = state.destinations.set_paused(&id, paused).await?;
    let action = if paused {
        "destination.pause"
    } else {
        "destination.resume"
    };
    access.audit(action, destination.tenant.as_str(), id.as_str());
    Ok(axum::Json(destination.view()))
}

/// Send again, starting with what waited during the pause.
#[utoipa::path(post, path = "/v1/destinations/{id}/resume", operation_id = "resume_destination", tag = "destinations",
    responses((status = 200, body = DestinationView), (status = 404)))]
pub async fn resume(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<axum::Json<DestinationView>, ApiError> {
    set_paused(state, access, id, false).await
}

/// Send a `hookstream.test` event to this destination only.
#[utoipa::path(post, path = "/v1/destinations/{id}/test", operation_id = "test_destination", tag = "destinations",
    responses((status = 202, body = crate::ingest::Accepted), (status = 404)))]
pub async fn send_test(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = destination_id(&id)?;
    let destination = owned(&state, &access, &id).await?;
    let event = crate::destinations::test_event(&destination);
    let accepted = state
        .ingestor
        .ingest(event, None, &TraceContext::default())
        .await?;
    access.audit(
        "destination.test",
        destination.tenant.as_str(),
        &accepted.id,
    );
    Ok((StatusCode::ACCEPTED, axum::Json(accepted)).into_response())
}
