//! `/v1/events`: ingest (one or a batch), an event with its delivery status, its attempts.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::access::Access;
use super::error::ApiError;
use super::json::{ApiJson, parse};
use super::{AppState, bad_request};
use crate::events::{self, Deliveries, Delivery, EventSummary};
use crate::history;
use crate::ingest::{Accepted, BatchItemError, TraceContext};
use crate::model::{
    AttemptRecord, DeliveryStatus, DestinationId, EventId, EventPattern, NewEvent, TenantId,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", post(post_event).get(list_events))
        .route("/v1/events/batch", post(post_batch))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/events/{id}/attempts", get(get_attempts))
        .route("/v1/events/{id}/resend", post(resend))
}

const MAX_IDEMPOTENCY_KEY: usize = 255;

/// What ingest reads from the request's headers, read from them in place (axum's
/// `HeaderMap` extractor copies the whole map). A bad `Idempotency-Key` is answered by the
/// handler, after the body's own checks, as when it read the headers itself.
pub struct IngestHeaders {
    key: Result<Option<String>, ApiError>,
    trace: TraceContext,
}

impl<S: Send + Sync> FromRequestParts<S> for IngestHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            key: idempotency_key(&parts.headers),
            trace: trace_context(&parts.headers),
        })
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::Invalid("Idempotency-Key must be visible ASCII".into()))?;
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::Invalid(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
        )));
    }
    Ok(Some(key.to_string()))
}

fn trace_context(headers: &HeaderMap) -> TraceContext {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 512)
            .map(String::from)
    };
    TraceContext {
        traceparent: get("traceparent"),
        tracestate: get("tracestate"),
    }
}

fn accepted_response(accepted: Accepted) -> Response {
    let status = if accepted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, axum::Json(accepted)).into_response()
}

/// Ingest one event.
#[utoipa::path(post, path = "/v1/events", operation_id = "ingest_event", tag = "events", request_body = NewEvent,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe for 24 h")),
    responses(
        (status = 202, description = "Accepted: stored durably", body = Accepted),
        (status = 200, description = "A repeat of an accepted event", body = Accepted),
        (status = 400, description = "Invalid JSON or event"),
        (status = 413, description = "Body over the limit"),
        (status = 415, description = "Not application/json"),
        (status = 409, description = "The event id is used by another tenant"),
        (status = 429, description = "The tenant is over its ingest rate limit; see Retry-After"),
        (status = 503, description = "NATS down or stream full; see Retry-After"),
    ))]
pub async fn post_event(
    State(state): State<AppState>,
    access: Access,
    headers: IngestHeaders,
    ApiJson(mut event): ApiJson<NewEvent>,
) -> Result<Response, ApiError> {
    event.tenant = access.scope(event.tenant.take())?;
    let key = headers.key?;
    let accepted = state
        .ingestor
        .ingest(event, key.as_deref(), &headers.trace)
        .await?;
    Ok(accepted_response(accepted))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    #[schema(value_type = Vec<NewEvent>)]
    pub events: Vec<Box<RawValue>>,
}

/// One item's result: `{id, duplicate, status}` or `{error, status}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItem {
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<serde_json::Value>,
}

/// The answer to a batch: one result per item, in the request's order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAnswer {
    pub results: Vec<BatchItem>,
}

/// Ingest up to `events.max_batch` events; each item is accepted or refused on its own,
/// except that the whole batch answers 503 when NATS stored none of it.
#[utoipa::path(post, path = "/v1/events/batch", operation_id = "ingest_batch", tag = "events", request_body = BatchRequest,
    responses(
        (status = 200, description = "One result per item, in order", body = BatchAnswer),
        (status = 429, description = "The tenant is over its ingest rate limit; see Retry-After"),
        (status = 503, description = "NATS down or stream full and no item stored; see Retry-After"),
    ))]
pub async fn post_batch(
    State(state): State<AppState>,
    access: Access,
    headers: IngestHeaders,
    ApiJson(batch): ApiJson<BatchRequest>,
) -> Result<Response, ApiError> {
    let key = headers.key?;
    let outcomes = state
        .ingestor
        .ingest_batch(
            batch.events,
            state.cfg.events.max_batch,
            key.as_deref(),
            &headers.trace,
            |raw| -> Result<NewEvent, ApiError> {
                let mut event: NewEvent = parse(raw.get().as_bytes())?;
                event.tenant = access.scope(event.tenant.take())?;
                Ok(event)
            },
        )
        .await?;
    let results: Vec<BatchItem> = outcomes.into_iter().map(batch_item).collect();
    Ok((StatusCode::OK, axum::Json(BatchAnswer { results })).into_response())
}

fn batch_item(outcome: Result<Accepted, BatchItemError<ApiError>>) -> BatchItem {
    let outcome = outcome.map_err(|e| match e {
        BatchItemError::Refused(e) => e,
        BatchItemError::Ingest(e) => ApiError::from(e),
    });
    match outcome {
        Ok(a) => BatchItem {
            status: if a.duplicate { 200 } else { 202 },
            id: Some(a.id),
            duplicate: Some(a.duplicate),
            error: None,
        },
        Err(e) => BatchItem {
            status: e.status().as_u16(),
            id: None,
            duplicate: None,
            error: Some(e.body()["error"].clone()),
        },
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: String,
    pub tenant: String,
    pub stream_seq: u64,
    /// The envelope; null once retention removed the event.
    #[schema(value_type = Object)]
    pub event: Option<serde_json::Value>,
    pub deliveries: Vec<Delivery>,
}

fn event_id(raw: &str) -> Result<EventId, ApiError> {
    EventId::parse(raw).map_err(|_| ApiError::NotFound(format!("event {raw} not found")))
}

/// What tells a delivery's status, from the API's state.
pub fn deliveries(state: &AppState) -> Deliveries<'_> {
    Deliveries {
        broker: &state.broker,
        flow: &state.flow,
        registry: state.registry.as_deref(),
        destinations: &state.destinations,
    }
}

/// The event, if it exists and is the key's to see: another tenant's is "not found" too.
async fn owned_event(
    state: &AppState,
    access: &Access,
    id: &EventId,
) -> Result<history::StoredEvent, ApiError> {
    history::find_event(&state.broker, id)
        .await?
        .filter(|stored| access.owns(&stored.tenant))
        .ok_or_else(|| ApiError::NotFound(format!("event {id} not found")))
}

/// The event and its delivery status per destination.
#[utoipa::path(get, path = "/v1/events/{id}", operation_id = "get_event", tag = "events",
    responses((status = 200, body = EventView), (status = 404, description = "Unknown id")))]
pub async fn get_event(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<axum::Json<EventView>, ApiError> {
    let id = event_id(&id)?;
    let detail = deliveries(&state)
        .event(&id, |tenant| access.owns(tenant))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("event {id} not found")))?;
    Ok(axum::Json(EventView {
        id: id.to_string(),
        tenant: detail.stored.tenant,
        stream_seq: detail.stored.seq,
        event: detail.stored.envelope,
        deliveries: detail.deliveries,
    }))
}

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    pub tenant: Option<String>,
    /// An event type or pattern (`order.created`, `order.*`, `order.>`).
    pub event_type: Option<String>,
    /// Stored at or after (RFC 3339).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Stored at or before (RFC 3339).
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Events routed to this destination.
    pub destination_id: Option<String>,
    /// Events with a delivery in this status (at `destination_id`, when given).
    #[param(value_type = Option<String>)]
    pub status: Option<DeliveryStatus>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page (same filters).
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub data: Vec<EventSummary>,
    /// Null when there is nothing more. A page can be short (even empty) and still have a
    /// cursor: each page looks at a bounded number of events.
    pub next_cursor: Option<String>,
}

/// Events newest first, filtered; paged with `next_cursor`.
#[utoipa::path(get, path = "/v1/events", operation_id = "search_events", tag = "events", params(SearchQuery),
    responses(
        (status = 200, body = EventList),
        (status = 400, description = "Bad filter or cursor"),
        (status = 404, description = "Unknown destination"),
        (status = 503, description = "NATS down; see Retry-After"),
    ))]
pub async fn list_events(
    State(state): State<AppState>,
    access: Access,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<axum::Json<EventList>, ApiError> {
    let Query(q) = query.map_err(bad_request)?;
    let tenant = access.scope_text(q.tenant.as_deref())?;
    let limit = super::Page {
        limit: q.limit,
        cursor: None,
        tenant: None,
    }
    .limit()?;
    let search = search_query(&state, &access, tenant, q.event_type, q.destination_id).await?;
    let search = events::Query {
        since: q.since,
        until: q.until,
        status: q.status,
        ..search
    };
    let cursor = q.cursor.as_deref().map(events::Cursor::parse).transpose()?;
    let page = events::search::search(deliveries(&state), &search, cursor, limit).await?;
    Ok(axum::Json(EventList {
        data: page.events,
        next_cursor: page.next.map(|c| c.to_string()),
    }))
}

/// The filters of a search that need checking or a look-up: type pattern and
/// destination (404 when unknown, not the key's, or of another tenant than `tenant`,
/// the scope the caller got from `access`).
pub async fn search_query(
    state: &AppState,
    access: &Access,
    tenant: Option<TenantId>,
    event_type: Option<String>,
    destination_id: Option<String>,
) -> Result<events::Query, ApiError> {
    let event_type = event_type
        .map(EventPattern::parse)
        .transpose()
        .map_err(bad_request)?;
    let destination = match destination_id {
        None => None,
        Some(raw) => {
            let missing = || ApiError::NotFound(format!("destination {raw} not found"));
            let id = DestinationId::parse(raw.clone()).map_err(|_| missing())?;
            let (d, _) = state.destinations.get(&id).await?.ok_or_else(missing)?;
            if !access.owns(d.tenant.as_str()) || tenant.as_ref().is_some_and(|t| t != &d.tenant) {
                return Err(missing());
            }
            Some(d)
        }
    };
    Ok(events::Query {
        tenant,
        event_type,
        destination,
        ..Default::default()
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationAttempts {
    pub destination_id: String,
    pub attempts: Vec<AttemptRecord>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptsView {
    pub event_id: String,
    pub destinations: Vec<DestinationAttempts>,
}

/// Every attempt of the event, per destination, oldest first.
#[utoipa::path(get, path = "/v1/events/{id}/attempts", operation_id = "list_event_attempts", tag = "events",
    responses((status = 200, body = AttemptsView), (status = 404, description = "Unknown id")))]
pub async fn get_attempts(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<axum::Json<AttemptsView>, ApiError> {
    let id = event_id(&id)?;
    let stored = owned_event(&state, &access, &id).await?;
    let attempts = history::attempts_of(&state.broker, &stored.tenant, &id).await?;
    Ok(axum::Json(AttemptsView {
        event_id: id.to_string(),
        destinations: history::by_destination(&attempts)
            .into_iter()
            .map(|(destination_id, attempts)| DestinationAttempts {
                destination_id,
                attempts,
            })
            .collect(),
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendBody {
    /// Send to this destination only (of the event's tenant). Without it: every
    /// destination the event was attempted at that still exists and is enabled.
    #[schema(value_type = Option<String>)]
    pub destination_id: Option<crate::model::DestinationId>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResentView {
    pub destination_id: String,
    /// The new message's sequence on `HS_EVENTS`.
    pub stream_seq: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResendAnswer {
    pub event_id: String,
    pub resent: Vec<ResentView>,
}

/// Send an event again (same `webhook-id`, fresh attempts) while it is on `HS_EVENTS`.
#[utoipa::path(post, path = "/v1/events/{id}/resend", operation_id = "resend_event", tag = "events", request_body = Option<ResendBody>,
    responses(
        (status = 202, body = ResendAnswer),
        (status = 404, description = "Unknown event, or destination not of its tenant"),
        (status = 409, description = "Destination disabled, or nothing to resend to"),
        (status = 410, description = "The event is no longer on HS_EVENTS"),
    ))]
pub async fn resend(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id = event_id(&id)?;
    let request: ResendBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResendBody::default()
    } else {
        parse(&body)?
    };
    let resent = crate::dlq::resend::resend(
        &state.broker,
        &state.destinations,
        &id,
        access.tenant(),
        request.destination_id.as_ref(),
    )
    .await?;
    for r in &resent {
        access.audit(
            "event.resend",
            access.tenant().map_or("*", |t| t.as_str()),
            &format!("{id} -> {}", r.destination_id),
        );
    }
    let answer = ResendAnswer {
        event_id: id.to_string(),
        resent: resent
            .into_iter()
            .map(|r| ResentView {
                destination_id: r.destination_id,
                stream_seq: r.stream_seq,
            })
            .collect(),
    };
    Ok((StatusCode::ACCEPTED, axum::Json(answer)).into_response())
}
