//! `/v1/dlq`: list dead letters, read or delete one, replay or purge a selection.
//! The work is done in `dlq/`; this file only maps HTTP shapes.
//!
//! A dead letter's `id` is its sequence number on `HS_DLQ` (a JSON number). Time ranges
//! (`since`, `until`, RFC 3339) apply to when the dead letter was stored.
//!
//! About 550 lines: six routes, each with its OpenAPI description next to it (the
//! document is generated from these attributes), and 50 lines of unit tests.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::Access;
use super::error::ApiError;
use super::json::{ApiJson, parse};
use super::{AppState, bad_request};
use crate::dlq::purge::{self, PurgeReport, PurgeRequest};
use crate::dlq::replay::{self, ReplayReport, ReplayRequest};
use crate::dlq::{Cursor, DeadLetterFilter, Order, StoredDeadLetter, Target, browse, letter};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/dlq", get(list))
        .route("/v1/dlq/replay", post(replay))
        .route("/v1/dlq/purge", post(purge))
        .route("/v1/dlq/{id}", get(read).delete(remove))
}

/// Dead letters handled by one replay or purge call at most (default 1000).
const MAX_BATCH: usize = 10_000;
const DEFAULT_BATCH: usize = 1000;
/// Ids listed in one replay or purge call at most.
const MAX_IDS: usize = 1000;

/// One dead letter. Also what `hookstream dlq list` reads.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterView {
    /// The dead letter's id: its sequence on `HS_DLQ`.
    pub id: u64,
    pub tenant: String,
    pub destination_id: String,
    /// Null when the body is not an event envelope (`malformed_event`).
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    /// `max_attempts`, `gone`, `malformed_event` or `tenant_mismatch`.
    pub reason: Option<String>,
    pub attempts: Option<u32>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When it was stored on `HS_DLQ`.
    pub dead_lettered_at: DateTime<Utc>,
    /// Sequence of the failed message on `HS_EVENTS`.
    pub original_seq: Option<u64>,
    /// When the failed message was itself a replay: the dead letter it replayed.
    pub replay_of: Option<u64>,
    /// The event envelope (only on `GET /v1/dlq/{id}`); a string when it is not JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub event: Option<serde_json::Value>,
}

impl DeadLetterView {
    fn from_letter(letter: StoredDeadLetter, with_event: bool) -> Self {
        let event = with_event.then(|| {
            serde_json::from_slice(&letter.body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&letter.body).into_owned())
            })
        });
        Self {
            id: letter.seq,
            tenant: letter.tenant,
            destination_id: letter.destination_id,
            event_id: letter.event_id,
            event_type: letter.event_type,
            reason: letter.reason,
            attempts: letter.attempts,
            last_status: letter.last_status,
            last_error: letter.last_error,
            first_attempt_at: letter.first_attempt_at,
            last_attempt_at: letter.last_attempt_at,
            dead_lettered_at: letter.dead_lettered_at,
            original_seq: letter.original_seq,
            replay_of: letter.replay_of,
            event,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListOrder {
    Oldest,
    #[default]
    Newest,
}

/// Query of `GET /v1/dlq` (also sent by `hookstream dlq list`).
#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Declared in the OpenAPI document by `DeadLetterFilter`'s own parameters.
    #[serde(flatten)]
    #[param(ignore)]
    pub filter: DeadLetterFilter,
    /// `newest` (default) or `oldest` first.
    #[param(value_type = Option<String>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<ListOrder>,
    /// At most this many (1 to 1000, default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page (same filters and order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterList {
    pub data: Vec<DeadLetterView>,
    /// Null when there is nothing more. A page can be short (even empty) and still have
    /// a cursor: each page looks at a bounded number of dead letters.
    pub next_cursor: Option<String>,
}

/// The filter with its tenant held to the key's, checked as a whole.
fn scoped(access: &Access, filter: DeadLetterFilter) -> Result<DeadLetterFilter, ApiError> {
    filter.validate()?;
    Ok(DeadLetterFilter {
        tenant: access.scope(filter.tenant.clone())?,
        ..filter
    })
}

fn cursor(text: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    Ok(text.map(Cursor::parse).transpose()?)
}

/// Dead letters, newest or oldest first, filtered and paged.
#[utoipa::path(get, path = "/v1/dlq", operation_id = "list_dead_letters", tag = "dead-letters", params(DeadLetterFilter, ListQuery),
    responses((status = 200, body = DeadLetterList), (status = 400)))]
pub async fn list(
    State(state): State<AppState>,
    access: Access,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<axum::Json<DeadLetterList>, ApiError> {
    let Query(q) = query.map_err(bad_request)?;
    let filter = scoped(&access, q.filter)?;
    let limit = match q.limit {
        None => 100,
        Some(n @ 1..=1000) => n,
        Some(_) => return Err(ApiError::Invalid("limit must be 1 to 1000".into())),
    };
    let order = match q.order.unwrap_or_default() {
        ListOrder::Oldest => Order::Oldest,
        ListOrder::Newest => Order::Newest,
    };
    let page = browse::list(
        &state.broker,
        &filter,
        order,
        cursor(q.cursor.as_deref())?,
        limit,
    )
    .await?;
    Ok(axum::Json(DeadLetterList {
        data: page
            .letters
            .into_iter()
            .map(|l| DeadLetterView::from_letter(l, false))
            .collect(),
        next_cursor: page.next.map(|c| c.to_string()),
    }))
}

fn dead_letter_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("dead letter {raw} not found")))
}

/// One dead letter with its event.
#[utoipa::path(get, path = "/v1/dlq/{id}", operation_id = "get_dead_letter", tag = "dead-letters",
    responses((status = 200, body = DeadLetterView), (status = 404)))]
pub async fn read(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<axum::Json<DeadLetterView>, ApiError> {
    let id = dead_letter_id(&id)?;
    let letter = owned_letter(&state, &access, id).await?;
    Ok(axum::Json(DeadLetterView::from_letter(letter, true)))
}

/// The dead letter, if it exists and is the key's: another tenant's is "not found" too.
async fn owned_letter(
    state: &AppState,
    access: &Access,
    id: u64,
) -> Result<StoredDeadLetter, ApiError> {
    letter::get(&state.broker, id)
        .await?
        .filter(|l| access.owns(&l.tenant))
        .ok_or_else(|| ApiError::NotFound(format!("dead letter {id} not found")))
}

/// Delete one dead letter without sending it.
#[utoipa::path(delete, path = "/v1/dlq/{id}", operation_id = "delete_dead_letter", tag = "dead-letters",
    responses((status = 204), (status = 404)))]
pub async fn remove(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = dead_letter_id(&id)?;
    let tenant = match access.tenant() {
        Some(_) => owned_letter(&state, &access, id).await?.tenant,
        None => "*".to_string(),
    };
    purge::delete_one(&state.broker, id).await?;
    access.audit("dead_letter.delete", &tenant, &id.to_string());
    Ok(StatusCode::NO_CONTENT)
}

/// The selection of a replay or purge: `ids`, or filters (not both). Also what
/// `hookstream dlq purge` sends.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSelection {
    /// Dead-letter ids (up to 1000). Ids that are not (or no longer) dead letters are
    /// reported in `not_found`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<u64>>,
    #[serde(flatten)]
    pub filter: DeadLetterFilter,
    /// Dead letters handled in this call at most (1 to 10000, default 1000); go on with
    /// `cursor` while the answer has a `next_cursor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Count what would be done; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl DeadLetterSelection {
    /// The target, cursor, limit and dry-run flag, with the tenant held to the key's.
    fn into_parts(
        self,
        access: &Access,
    ) -> Result<(Target, Option<Cursor>, usize, bool), ApiError> {
        let has_filter = !self.filter.is_everything();
        let filter = scoped(access, self.filter)?;
        let limit = match self.limit {
            None => DEFAULT_BATCH,
            Some(n @ 1..=MAX_BATCH) => n,
            Some(_) => {
                return Err(ApiError::Invalid(format!("limit must be 1 to {MAX_BATCH}")));
            }
        };
        let cursor = cursor(self.cursor.as_deref())?;
        let target = match self.ids {
            Some(_) if has_filter => {
                return Err(ApiError::Invalid(
                    "give ids or filters (tenant, destination_id, event_type, since, until), \
                     not both"
                        .into(),
                ));
            }
            Some(ids) if ids.is_empty() || ids.len() > MAX_IDS => {
                return Err(ApiError::Invalid(format!("ids holds 1 to {MAX_IDS} ids")));
            }
            Some(_) if cursor.is_some() => {
                return Err(ApiError::Invalid(
                    "cursor goes with filters, not ids".into(),
                ));
            }
            Some(ids) => Target::Ids(ids),
            None => Target::Filter(filter),
        };
        Ok((target, cursor, limit, self.dry_run))
    }
}

/// A replay: a selection (as for a purge) and whether to re-enable disabled destinations.
/// Also what `hookstream dlq replay` sends.
///
/// The selection's own fields are repeated here instead of a flattened
/// `DeadLetterSelection`: serde cannot refuse unknown fields through two levels of
/// `flatten` (the inner one would see, and refuse, `enable_destination`).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Dead-letter ids (up to 1000), or filters; not both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<u64>>,
    #[serde(flatten)]
    pub filter: DeadLetterFilter,
    /// Dead letters handled in this call at most (1 to 10000, default 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Count what would be replayed (destinations are checked too); change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Re-enable a disabled destination instead of refusing the replay.
    #[serde(default)]
    pub enable_destination: bool,
}

impl ReplayBody {
    pub fn new(selection: DeadLetterSelection, enable_destination: bool) -> Self {
        Self {
            ids: selection.ids,
            filter: selection.filter,
            limit: selection.limit,
            cursor: selection.cursor,
            dry_run: selection.dry_run,
            enable_destination,
        }
    }

    fn selection(self) -> DeadLetterSelection {
        DeadLetterSelection {
            ids: self.ids,
            filter: self.filter,
            limit: self.limit,
            cursor: self.cursor,
            dry_run: self.dry_run,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SkippedView {
    pub destination_id: String,
    /// `destination_deleted`, `destination_disabled` or `malformed_event`.
    pub code: String,
    pub count: u64,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReplayAnswer {
    /// Dead letters selected by this call.
    pub matched: u64,
    /// Re-published to their destination and removed from `HS_DLQ` (0 on a dry run).
    pub replayed: u64,
    /// Re-published by an earlier replay that was cut short: not sent again, removed.
    pub already_replayed: u64,
    /// Left in `HS_DLQ`, per destination and reason.
    pub skipped: Vec<SkippedView>,
    pub not_found: Vec<u64>,
    pub enabled_destinations: Vec<String>,
    pub dry_run: bool,
    /// Call again with this cursor (same filters) to go on; null when done.
    pub next_cursor: Option<String>,
}

impl ReplayAnswer {
    fn new(report: ReplayReport, dry_run: bool) -> Self {
        Self {
            matched: report.matched,
            replayed: report.replayed,
            already_replayed: report.already_replayed,
            skipped: report
                .skipped
                .into_iter()
                .map(|s| SkippedView {
                    destination_id: s.destination_id,
                    code: s.why.code().to_string(),
                    count: s.count,
                    message: s.message,
                })
                .collect(),
            not_found: report.not_found,
            enabled_destinations: report.enabled_destinations,
            dry_run,
            next_cursor: report.next.map(|c| c.to_string()),
        }
    }
}

/// Optional JSON body: empty means `{}`.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse(body)
    }
}

/// Re-publish dead letters to their destination only, then remove them from `HS_DLQ`.
#[utoipa::path(post, path = "/v1/dlq/replay", operation_id = "replay_dead_letters", tag = "dead-letters", request_body = ReplayBody,
    responses(
        (status = 200, body = ReplayAnswer),
        (status = 400, description = "Bad filter, ids with filters, bad cursor"),
        (status = 409, description = "destination_deleted or destination_disabled"),
    ))]
pub async fn replay(
    State(state): State<AppState>,
    access: Access,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<axum::Json<ReplayAnswer>, ApiError> {
    let enable_destination = body.enable_destination;
    let (target, cursor, limit, dry_run) = body.selection().into_parts(&access)?;
    let report = replay::replay(
        &state.broker,
        &state.destinations,
        ReplayRequest {
            target,
            tenant: access.tenant().cloned(),
            cursor,
            limit,
            enable_destination,
            dry_run,
        },
    )
    .await?;
    if !dry_run {
        access.audit(
            "dead_letter.replay",
            access.tenant().map_or("*", |t| t.as_str()),
            &format!("{} replayed", report.replayed),
        );
    }
    Ok(axum::Json(ReplayAnswer::new(report, dry_run)))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PurgeAnswer {
    pub matched: u64,
    /// Removed (0 on a dry run).
    pub purged: u64,
    pub not_found: Vec<u64>,
    pub dry_run: bool,
    pub next_cursor: Option<String>,
}

impl PurgeAnswer {
    fn new(report: PurgeReport, dry_run: bool) -> Self {
        Self {
            matched: report.matched,
            purged: report.purged,
            not_found: report.not_found,
            dry_run,
            next_cursor: report.next.map(|c| c.to_string()),
        }
    }
}

/// Remove dead letters without sending them: `ids`, or at least one filter.
#[utoipa::path(post, path = "/v1/dlq/purge", operation_id = "purge_dead_letters", tag = "dead-letters", request_body = DeadLetterSelection,
    responses((status = 200, body = PurgeAnswer), (status = 400)))]
pub async fn purge(
    State(state): State<AppState>,
    access: Access,
    body: Bytes,
) -> Result<axum::Json<PurgeAnswer>, ApiError> {
    let request: DeadLetterSelection = optional_body(&body)?;
    if request.ids.is_none() && request.filter.is_everything() {
        return Err(ApiError::Invalid(
            "a purge needs ids or at least one filter (tenant, destination_id, event_type, \
             since, until)"
                .into(),
        ));
    }
    let (target, cursor, limit, dry_run) = request.into_parts(&access)?;
    let report = purge::purge(
        &state.broker,
        PurgeRequest {
            target,
            tenant: access.tenant().cloned(),
            cursor,
            limit,
            dry_run,
        },
    )
    .await?;
    if !dry_run {
        access.audit(
            "dead_letter.purge",
            access.tenant().map_or("*", |t| t.as_str()),
            &format!("{} purged", report.purged),
        );
    }
    Ok(axum::Json(PurgeAnswer::new(report, dry_run)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattened_filters_still_refuse_unknown_fields() {
        let query: ListQuery = serde_urlencoded::from_str(
            "tenant=acme&limit=5&order=oldest&since=2026-01-01T00:00:00Z",
        )
        .unwrap();
        assert_eq!(
            query.filter.tenant.as_ref().map(|t| t.as_str()),
            Some("acme")
        );
        assert_eq!(query.limit, Some(5));
        assert!(serde_urlencoded::from_str::<ListQuery>("colour=red").is_err());
        assert!(serde_urlencoded::from_str::<ListQuery>("destination_id=no%20spaces").is_err());
        let replay: ReplayBody =
            serde_json::from_str(r#"{"destination_id":"d1","enable_destination":true}"#).unwrap();
        assert!(replay.enable_destination);
        assert!(serde_json::from_str::<ReplayBody>(r#"{"colour":"red"}"#).is_err());
        assert!(
            serde_json::from_str::<DeadLetterSelection>(r#"{"enable_destination":true}"#).is_err(),
            "a purge has no enable_destination"
        );
    }

    #[test]
    fn the_listing_declares_every_filter_as_a_query_parameter() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(crate::api::openapi::ApiDoc::openapi()).unwrap();
        let params = doc["paths"]["/v1/dlq"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>();
        for name in [
            "tenant",
            "destination_id",
            "event_type",
            "since",
            "until",
            "order",
            "limit",
            "cursor",
        ] {
            assert!(params.iter().any(|p| p == name), "{name} in {params:?}");
        }
        assert!(!params.iter().any(|p| p == "filter"), "{params:?}");
    }
}
