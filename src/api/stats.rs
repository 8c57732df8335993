//! `/v1/stats`: per destination, the delivery counters summed across replicas and the
//! consumer's backlog.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use futures::StreamExt;
use serde::Serialize;
use utoipa::ToSchema;

use super::access::Access;
use super::{AppState, Page, bad_request};
use crate::delivery::stats::read_totals;
use crate::error::ApiError;
use crate::model::circuit::CircuitView;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/stats", get(stats))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationStats {
    pub destination_id: String,
    pub tenant: String,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    /// Handed out and not finished: in flight, or waiting for the next attempt.
    pub retrying: u64,
    /// Events not yet handed out to a worker.
    pub pending: u64,
    /// `pending + retrying`.
    pub backlog: u64,
    pub enabled: bool,
    pub paused: bool,
    pub circuit: CircuitView,
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
    let data = futures::stream::iter(destinations)
        .map(|d| {
            let state = state.clone();
            async move {
                let [delivered, failed, dead] = read_totals(&state.broker, d.id.as_str()).await;
                let (pending, retrying) = state.broker.destination_backlog(d.id.as_str()).await;
                DestinationStats {
                    destination_id: d.id.to_string(),
                    tenant: d.tenant.to_string(),
                    delivered,
                    failed_attempts: failed,
                    dead_lettered: dead,
                    retrying,
                    pending,
                    backlog: pending + retrying,
                    enabled: d.enabled,
                    paused: d.paused,
                    circuit: state.flow.circuits.view(d.id.as_str()),
                }
            }
        })
        .buffered(16)
        .collect()
        .await;
    Ok(axum::Json(StatsList { data, next_cursor }))
}
