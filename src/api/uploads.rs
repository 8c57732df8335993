//! `/v1/uploads`: files in, one event per line (`src/files/`). An upload is streamed into
//! the object store, never held in memory, under its own body limit
//! (`ingest.upload_max_bytes`) and timeout (`ingest.upload_timeout_ms`) instead of the
//! API's; the answer comes once the file is stored, and its ingest runs in the workers.

use axum::Router;
use axum::extract::multipart::Field;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tower_http::timeout::TimeoutLayer;
use utoipa::{IntoParams, ToSchema};

use super::access::Access;
use super::error::ApiError;
use super::{AppState, bad_request};
use crate::config::Config;
use crate::files::{FileRecord, Format, Origin, RejectedLine, Status, UploadRequest};
use crate::model::{EventType, TenantId};

pub fn router(cfg: &Config) -> Router<AppState> {
    Router::new()
        .route("/v1/uploads", get(list).post(create))
        .route("/v1/uploads/{id}", get(read))
        .route("/v1/uploads/{id}/errors", get(errors))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            cfg.ingest.upload_timeout,
        ))
        // The size limit is ingest.upload_max_bytes, counted while the file streams.
        .layer(DefaultBodyLimit::disable())
}

/// Query of `POST /v1/uploads`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The event type of every line (CSV: unless `type_column` names a column).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// CSV: the column that holds each row's event type.
    pub type_column: Option<String>,
    /// `default` when not given.
    pub tenant: Option<String>,
    /// `csv` or `ndjson`; by default from the content type (or the multipart file's).
    pub format: Option<String>,
    /// The file's name, shown in the upload's status (multipart: the file's own).
    pub name: Option<String>,
}

/// Also what `hookstream upload` reads.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadAccepted {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn format_of_media(media: &str) -> Option<Format> {
    match media {
        "text/csv" => Some(Format::Csv),
        "application/x-ndjson" => Some(Format::Ndjson),
        _ => None,
    }
}

fn format_of_name(name: &str) -> Option<Format> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".csv") {
        Some(Format::Csv)
    } else if lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
        Some(Format::Ndjson)
    } else {
        None
    }
}

/// The checks that need no byte of the file: tenant, type, format.
fn upload_request(
    tenant: TenantId,
    q: &UploadQuery,
    format: Option<Format>,
    name: Option<String>,
) -> Result<UploadRequest, ApiError> {
    let format = format.ok_or_else(|| {
        ApiError::Invalid("format is required (csv or ndjson) for this file".into())
    })?;
    let event_type = q
        .event_type
        .clone()
        .map(EventType::parse)
        .transpose()
        .map_err(bad_request)?;
    match (format, &event_type, &q.type_column) {
        (_, Some(_), Some(_)) => {
            return Err(ApiError::Invalid(
                "give type or type_column, not both".into(),
            ));
        }
        (Format::Csv, None, None) => {
            return Err(ApiError::Invalid(
                "a csv upload needs type (or type_column)".into(),
            ));
        }
        (Format::Ndjson, _, Some(_)) => {
            return Err(ApiError::Invalid(
                "type_column is for csv; an ndjson line names its type itself".into(),
            ));
        }
        (_, _, Some(c)) if c.is_empty() || c.len() > 255 => {
            return Err(ApiError::Invalid("type_column is 1 to 255 bytes".into()));
        }
        _ => {}
    }
    if name.as_ref().is_some_and(|n| n.len() > 255) {
        return Err(ApiError::Invalid("name is at most 255 bytes".into()));
    }
    Ok(UploadRequest {
        tenant,
        format,
        event_type,
        type_column: q.type_column.clone(),
        name,
    })
}

fn accepted(access: &Access, uploaded: crate::files::Uploaded) -> Response {
    access.audit("upload.create", &uploaded.tenant, &uploaded.id);
    if uploaded.duplicate {
        let body = UploadAccepted {
            id: uploaded.id,
            status: None,
            duplicate: Some(true),
        };
        (StatusCode::OK, axum::Json(body)).into_response()
    } else {
        let body = UploadAccepted {
            id: uploaded.id,
            status: Some(Status::Queued),
            duplicate: None,
        };
        (StatusCode::ACCEPTED, axum::Json(body)).into_response()
    }
}

/// Stores the multipart field `file` as an upload of `tenant` (already checked against
/// the caller's scope): the one path of `POST /v1/uploads`'s forms and the console's
/// upload form. `asked`: the format the request named, else the field's content type,
/// else its file name's extension.
pub async fn store_file_field(
    state: &AppState,
    tenant: TenantId,
    q: &UploadQuery,
    asked: Option<Format>,
    field: Field<'_>,
) -> Result<crate::files::Uploaded, ApiError> {
    let file_name = field.file_name().map(String::from);
    let format = asked
        .or_else(|| field.content_type().and_then(format_of_media))
        .or_else(|| file_name.as_deref().and_then(format_of_name));
    let upload = upload_request(tenant, q, format, q.name.clone().or(file_name))?;
    let body = field.map(|chunk| chunk.map_err(|e| e.body_text()));
    Ok(state.files.upload(upload, Box::pin(body)).await?)
}

/// The format a request names, if it names one.
pub fn asked_format(format: Option<&str>) -> Result<Option<Format>, ApiError> {
    format
        .map(|f| {
            Format::parse(f)
                .ok_or_else(|| ApiError::Invalid(format!("unknown format {f:?}: csv or ndjson")))
        })
        .transpose()
}

/// Upload a file: one event per line, once the file is stored.
#[utoipa::path(post, path = "/v1/uploads", operation_id = "create_upload", params(UploadQuery),
    request_body(content(
            (String = "text/csv"), (String = "application/x-ndjson"), (String = "multipart/form-data")),
        description = "The file, or a multipart form with the field `file`"),
    responses(
        (status = 202, description = "Stored; lines are ingested in the background", body = UploadAccepted),
        (status = 200, description = "This content was uploaded already: the first upload's id", body = UploadAccepted),
        (status = 400, description = "Unknown format or type, missing type, no `file` field"),
        (status = 403, description = "A tenant key naming another tenant"),
        (status = 413, description = "Over ingest.upload_max_bytes"),
        (status = 415, description = "Not text/csv, application/x-ndjson or multipart/form-data"),
        (status = 503, description = "NATS down; see Retry-After"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    access: Access,
    query: Result<Query<UploadQuery>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(bad_request)?;
    let tenant = access
        .scope_text(q.tenant.as_deref())?
        .unwrap_or_else(TenantId::default_tenant);
    let media = media_type(request.headers());
    let asked = asked_format(q.format.as_deref())?;
    let max = state.cfg.ingest.upload_max_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large =
        || ApiError::PayloadTooLarge(format!("the file is over the limit of {max} bytes"));
    if media == "multipart/form-data" {
        // The form's own framing adds a little to the file.
        if declared.is_some_and(|n| n > max.saturating_add(64 * 1024)) {
            return Err(too_large());
        }
        let mut form = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::Invalid(e.body_text()))?;
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| ApiError::Invalid(e.body_text()))?
        {
            if field.name() != Some("file") {
                continue;
            }
            let uploaded = store_file_field(&state, tenant, &q, asked, field).await?;
            return Ok(accepted(&access, uploaded));
        }
        return Err(ApiError::Invalid(
            "the multipart form has no field named file".into(),
        ));
    }
    let Some(format) = format_of_media(&media) else {
        return Err(ApiError::UnsupportedMediaType(
            "expected content-type: text/csv, application/x-ndjson or multipart/form-data".into(),
        ));
    };
    if asked.is_some_and(|a| a != format) {
        return Err(ApiError::Invalid(format!(
            "format {} does not match content-type {media}",
            asked.map(Format::as_str).unwrap_or_default()
        )));
    }
    let upload = upload_request(tenant, &q, Some(format), q.name.clone())?;
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let body = request.into_body().into_data_stream();
    let uploaded = state.files.upload(upload, body).await?;
    Ok(accepted(&access, uploaded))
}

/// An upload (or folder file) and its progress. Also what `hookstream upload` follows.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadView {
    pub id: String,
    pub tenant: String,
    /// `upload` or `folder`.
    pub source: String,
    pub name: Option<String>,
    #[schema(value_type = String)]
    pub format: Format,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub type_column: Option<String>,
    pub size: u64,
    pub status: Status,
    pub lines: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why a failed file failed.
    pub error: Option<String>,
}

impl From<FileRecord> for UploadView {
    fn from(r: FileRecord) -> Self {
        Self {
            source: match r.origin {
                Origin::Upload { .. } => "upload",
                Origin::Folder { .. } => "folder",
            }
            .to_string(),
            id: r.id,
            tenant: r.tenant,
            name: r.name,
            format: r.format,
            event_type: r.event_type,
            type_column: r.type_column,
            size: r.size,
            status: r.status,
            lines: r.lines,
            accepted: r.accepted,
            rejected: r.rejected,
            duplicates: r.duplicates,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            error: r.error,
        }
    }
}

/// The upload, if it is this key's to see: another tenant's is as unknown as a missing one.
/// The upload `id` if `access` may see it (another tenant's: 404, as an unknown id).
/// The console's upload pages check through this too.
pub async fn find(state: &AppState, access: &Access, id: &str) -> Result<FileRecord, ApiError> {
    let not_found = || ApiError::NotFound(format!("upload {id} not found"));
    if !id.starts_with("upl_")
        || id.len() > 64
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(not_found());
    }
    match state.files.get(id).await? {
        Some(record) if access.owns(&record.tenant) => Ok(record),
        _ => Err(not_found()),
    }
}

/// An upload's status and counts.
#[utoipa::path(get, path = "/v1/uploads/{id}", operation_id = "read_upload",
    responses((status = 200, body = UploadView), (status = 404, description = "Unknown id")))]
pub async fn read(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<axum::Json<UploadView>, ApiError> {
    Ok(axum::Json(find(&state, &access, &id).await?.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadList {
    pub uploads: Vec<UploadView>,
    pub next_cursor: Option<String>,
}

/// Uploads and folder files, newest first.
#[utoipa::path(get, path = "/v1/uploads", operation_id = "list_uploads", params(super::Page),
    responses((status = 200, body = UploadList)))]
pub async fn list(
    State(state): State<AppState>,
    access: Access,
    query: Result<Query<super::Page>, QueryRejection>,
) -> Result<axum::Json<UploadList>, ApiError> {
    let Query(page) = query.map_err(bad_request)?;
    let limit = page.limit()?;
    let tenant = access.scope_text(page.tenant.as_deref())?;
    let (records, next_cursor) = page_of(&state, tenant.as_ref(), page.cursor.as_deref(), limit);
    Ok(axum::Json(UploadList {
        uploads: records.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// A page of uploads (of `tenant`, already scoped by the caller's access), after
/// `cursor` (the last id of the previous page), and the next page's cursor.
pub fn page_of(
    state: &AppState,
    tenant: Option<&TenantId>,
    cursor: Option<&str>,
    limit: usize,
) -> (Vec<FileRecord>, Option<String>) {
    let mut rows = state
        .files
        .list()
        .into_iter()
        .filter(|r| tenant.is_none_or(|t| r.tenant == t.as_str()))
        .skip_while(|r| cursor.is_some_and(|c| c != r.id));
    if cursor.is_some() {
        // The cursor is the last item of the previous page.
        rows.next();
    }
    let records: Vec<FileRecord> = rows.by_ref().take(limit).collect();
    let next_cursor = if rows.next().is_some() {
        records.last().map(|r| r.id.clone())
    } else {
        None
    };
    (records, next_cursor)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ErrorsQuery {
    /// At most this many lines (1 to 1000, default 100).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page (a line number).
    pub cursor: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadErrors {
    pub id: String,
    /// Lines rejected so far.
    pub rejected: u64,
    pub errors: Vec<RejectedLine>,
    /// More lines were rejected than are kept (`ingest.errors_kept`).
    pub truncated: bool,
    pub next_cursor: Option<u64>,
}

/// The rejected lines of an upload: line number, reason, the line.
#[utoipa::path(get, path = "/v1/uploads/{id}/errors", operation_id = "list_upload_errors", params(ErrorsQuery),
    responses((status = 200, body = UploadErrors), (status = 404, description = "Unknown id")))]
pub async fn errors(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
    query: Result<Query<ErrorsQuery>, QueryRejection>,
) -> Result<axum::Json<UploadErrors>, ApiError> {
    let Query(q) = query.map_err(bad_request)?;
    let limit = match q.limit {
        None => 100,
        Some(n @ 1..=1000) => n,
        Some(_) => return Err(ApiError::Invalid("limit must be 1 to 1000".into())),
    };
    let record = find(&state, &access, &id).await?;
    let kept = state.files.errors(&id).await?;
    let total_kept = kept.lines.len() as u64;
    let mut rest = kept
        .lines
        .into_iter()
        .filter(|l| q.cursor.is_none_or(|c| l.line > c));
    let errors: Vec<RejectedLine> = rest.by_ref().take(limit).collect();
    let next_cursor = rest.next().and(errors.last().map(|l| l.line));
    Ok(axum::Json(UploadErrors {
        id: record.id,
        rejected: record.rejected,
        errors,
        truncated: record.rejected > total_kept,
        next_cursor,
    }))
}
