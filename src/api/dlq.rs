//! `/v1/dlq`: list dead letters, read or delete one, replay or purge a selection.
//! The work is done in `dlq/`; this file only maps HTTP shapes.
//!
//! A dead letter's `id` is its sequence number on `HS_DLQ` (a JSON number). Time ranges
//! (`since`, `until`, RFC 3339) apply to when the dead letter was stored.

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
use super::json::{ApiJson, parse};
use super::{AppState, bad_request};
use crate::dlq::purge::{self, PurgeReport, PurgeRequest};
use crate::dlq::replay::{self, ReplayReport, ReplayRequest, Target};
use crate::dlq::{Cursor, Order, Selection, StoredDeadLetter, browse};
use crate::error::ApiError;
use crate::model::{DestinationId, EventPattern, TenantId};

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

/// One dead letter.
#[derive(Debug, Serialize, ToSchema)]
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

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListOrder {
    Oldest,
    #[default]
    Newest,
}

/// Query of `GET /v1/dlq`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub tenant: Option<String>,
    pub destination_id: Option<String>,
    /// An event type or pattern (`order.created`, `order.*`, `order.>`).
    pub event_type: Option<String>,
    /// Dead-lettered at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered at or before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// `newest` (default) or `oldest` first.
    #[param(value_type = Option<String>)]
    pub order: Option<ListOrder>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page (same filters and order).
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    pub data: Vec<DeadLetterView>,
    /// Null when there is nothing more. A page can be short (even empty) and still have
    /// a cursor: each page looks at a bounded number of dead letters.
    pub next_cursor: Option<String>,
}

fn selection(
    tenant: Option<TenantId>,
    destination_id: Option<String>,
    event_type: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<Selection, ApiError> {
    if let (Some(a), Some(b)) = (since, until)
        && a > b
    {
        return Err(ApiError::Invalid("since is after until".into()));
    }
    Ok(Selection {
        tenant,
        destination: destination_id
            .map(DestinationId::parse)
            .transpose()
            .map_err(bad_request)?,
        event_type: event_type
            .map(EventPattern::parse)
            .transpose()
            .map_err(bad_request)?,
        since,
        until,
    })
}

fn cursor(text: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    Ok(text.map(Cursor::parse).transpose()?)
}

/// Dead letters, newest or oldest first, filtered and paged.
#[utoipa::path(get, path = "/v1/dlq", operation_id = "list_dead_letters", tag = "dead-letters", params(ListQuery),
    responses((status = 200, body = DeadLetterList), (status = 400)))]
pub async fn list(
    State(state): State<AppState>,
    access: Access,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<axum::Json<DeadLetterList>, ApiError> {
    let Query(q) = query.map_err(bad_request)?;
    let tenant = access.scope_text(q.tenant.as_deref())?;
    let limit = match q.limit {
        None => 100,
        Some(n @ 1..=1000) => n,
        Some(_) => return Err(ApiError::Invalid("limit must be 1 to 1000".into())),
    };
    let order = match q.order.unwrap_or_default() {
        ListOrder::Oldest => Order::Oldest,
        ListOrder::Newest => Order::Newest,
    };
    let selection = selection(tenant, q.destination_id, q.event_type, q.since, q.until)?;
    let page = browse::list(
        &state.broker,
        &selection,
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
    browse::get(&state.broker, id)
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

/// The selection of a replay or purge: `ids`, or filters (not both).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSelection {
    /// Dead-letter ids (up to 1000). Ids that are not (or no longer) dead letters are
    /// reported in `not_found`.
    pub ids: Option<Vec<u64>>,
    pub tenant: Option<String>,
    pub destination_id: Option<String>,
    /// An event type or pattern.
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Dead letters handled in this call at most (1 to 10000, default 1000); go on with
    /// `cursor` while the answer has a `next_cursor`.
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    /// Count what would be done; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl DeadLetterSelection {
    fn has_filter(&self) -> bool {
        self.tenant.is_some()
            || self.destination_id.is_some()
            || self.event_type.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }

    /// The target, cursor, limit and dry-run flag, with the tenant held to the key's.
    fn into_parts(
        self,
        access: &Access,
    ) -> Result<(Target, Option<Cursor>, usize, bool), ApiError> {
        let tenant = access.scope_text(self.tenant.as_deref())?;
        let limit = match self.limit {
            None => DEFAULT_BATCH,
            Some(n @ 1..=MAX_BATCH) => n,
            Some(_) => {
                return Err(ApiError::Invalid(format!("limit must be 1 to {MAX_BATCH}")));
            }
        };
        let cursor = cursor(self.cursor.as_deref())?;
        let has_filter = self.has_filter();
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
            None => Target::Filter(selection(
                tenant,
                self.destination_id,
                self.event_type,
                self.since,
                self.until,
            )?),
        };
        Ok((target, cursor, limit, self.dry_run))
    }
}

/// A replay: a selection (as for a purge) and whether to re-enable disabled destinations.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Dead-letter ids (up to 1000), or filters below; not both.
    pub ids: Option<Vec<u64>>,
    pub tenant: Option<String>,
    pub destination_id: Option<String>,
    /// An event type or pattern.
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Dead letters handled in this call at most (1 to 10000, default 1000).
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    /// Count what would be replayed (destinations are checked too); change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Re-enable a disabled destination instead of refusing the replay.
    #[serde(default)]
    pub enable_destination: bool,
}

impl ReplayBody {
    fn selection(self) -> DeadLetterSelection {
        DeadLetterSelection {
            ids: self.ids,
            tenant: self.tenant,
            destination_id: self.destination_id,
            event_type: self.event_type,
            since: self.since,
            until: self.until,
            limit: self.limit,
            cursor: self.cursor,
            dry_run: self.dry_run,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedView {
    pub destination_id: String,
    /// `destination_deleted`, `destination_disabled` or `malformed_event`.
    pub code: String,
    pub count: u64,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
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
                    code: s.code.to_string(),
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

#[derive(Debug, Serialize, ToSchema)]
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
    if request.ids.is_none() && !request.has_filter() {
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
