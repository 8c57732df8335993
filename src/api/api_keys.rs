//! `/v1/api-keys` (admin only, see `access::PERMISSIONS`): make a tenant or ingest key
//! (the key is in this one answer), list them (never the keys), delete one.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::access::Access;
use super::error::ApiError;
use super::json::ApiJson;
use crate::access::{KeyRecord, Role};
use crate::model::TenantId;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/api-keys", post(create_key).get(list_keys))
        .route("/v1/api-keys/{id}", delete(delete_key))
}

const MAX_NAME: usize = 200;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// The key's tenant (default `default`).
    #[schema(value_type = Option<String>)]
    pub tenant: Option<TenantId>,
    /// `tenant` or `ingest`; admin keys come from the configuration only.
    pub role: Role,
    /// A label for people (at most 200 characters).
    pub name: Option<String>,
}

/// A key as listed: never the key itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub tenant: String,
    pub role: Role,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The key: only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl ApiKeyView {
    fn of(record: KeyRecord) -> Self {
        Self {
            id: record.id,
            tenant: record.tenant.to_string(),
            role: record.role,
            name: record.name,
            created_at: record.created_at,
            key: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    pub data: Vec<ApiKeyView>,
}

/// Make a tenant or ingest key; the answer holds the key, shown this once.
#[utoipa::path(post, path = "/v1/api-keys", operation_id = "create_api_key", tag = "api-keys",
    request_body = NewApiKey,
    responses(
        (status = 201, body = ApiKeyView),
        (status = 400, body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 403, body = super::openapi::ErrorBody),
        (status = 415, body = super::openapi::ErrorBody),
        (status = 503, body = super::openapi::ErrorBody),
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    access: Access,
    ApiJson(input): ApiJson<NewApiKey>,
) -> Result<Response, ApiError> {
    if input.role == Role::Admin {
        return Err(ApiError::Invalid(
            "role must be tenant or ingest: admin keys come from the configuration \
             (api.auth.admin_keys, HOOKSTREAM_ADMIN_API_KEYS)"
                .into(),
        ));
    }
    let name = input.name.map(|n| n.trim().to_string());
    if name.as_ref().is_some_and(|n| {
        n.is_empty() || n.chars().count() > MAX_NAME || n.chars().any(char::is_control)
    }) {
        return Err(ApiError::Invalid(format!(
            "name is 1 to {MAX_NAME} printable characters"
        )));
    }
    let tenant = input.tenant.unwrap_or_default();
    let (record, key) = state.keys.create(tenant, input.role, name).await?;
    access.audit("api_key.create", record.tenant.as_str(), &record.id);
    let mut view = ApiKeyView::of(record);
    view.key = Some(key.expose());
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// Every tenant and ingest key (never the keys themselves), oldest first.
#[utoipa::path(get, path = "/v1/api-keys", operation_id = "list_api_keys", tag = "api-keys",
    responses(
        (status = 200, body = ApiKeyList),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 403, body = super::openapi::ErrorBody),
    ))]
pub async fn list_keys(State(state): State<AppState>, _access: Access) -> axum::Json<ApiKeyList> {
    axum::Json(ApiKeyList {
        data: state.keys.list().into_iter().map(ApiKeyView::of).collect(),
    })
}

/// Delete a key: it stops working on every replica (within 2 s).
#[utoipa::path(delete, path = "/v1/api-keys/{id}", operation_id = "delete_api_key", tag = "api-keys",
    params(("id" = String, Path, description = "The key's id (`key_…`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 403, body = super::openapi::ErrorBody),
        (status = 404, body = super::openapi::ErrorBody),
        (status = 503, body = super::openapi::ErrorBody),
    ))]
pub async fn delete_key(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::NotFound(format!("API key {id} not found"));
    // Ids are `key_` and a ULID: anything else is no key (and no KV key to look up).
    let valid = id.len() <= 64
        && id.starts_with("key_")
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(not_found());
    }
    let tenant = state
        .keys
        .list()
        .into_iter()
        .find(|r| r.id == id)
        .map(|r| r.tenant.to_string())
        .unwrap_or_default();
    if !state.keys.delete(&id).await? {
        return Err(not_found());
    }
    access.audit("api_key.delete", &tenant, &id);
    Ok(StatusCode::NO_CONTENT)
}
