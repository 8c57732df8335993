//! `/v1/stats`: per destination, the delivery counters summed across replicas and the
//! consumer's backlog. The figures are read in `delivery/stats.rs`; this file pages the
//! destinations and maps the answer.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::access::Access;
use super::error::ApiError;
use super::{AppState, Page, bad_request};
use crate::delivery::stats::{DestinationStats, of_destinations};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/stats", get(stats))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsList {
    pub data: Vec<DestinationStats>,
    pub next_cursor: Option<String>,
}

/// Delivery counters and backlog per destination, paged like the destination list.
#[utoipa::path(get, path = "/v1/stats", operation_id = "get_stats", tag = "stats", params(Page), responses((status = 200, body = StatsList)))]
pub async fn stats(
    State(state): State<AppState>,
    access: Access,
    query: Result<Query<Page>, QueryRejection>,
) -> Result<axum::Json<StatsList>, ApiError> {
    let Query(page) = query.map_err(bad_request)?;
    let tenant = access.scope(page.tenant()?)?;
    let (destinations, next_cursor) = state
        .destinations
        .list(tenant.as_ref(), page.cursor.as_deref(), page.limit()?)
        .await?;
    let data = of_destinations(&state.broker, &state.flow, destinations).await;
    Ok(axum::Json(StatsList { data, next_cursor }))
}
