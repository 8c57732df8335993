//! Event search, and one event's page: its envelope and a timeline of attempts per
//! destination.

use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::destinations::outcome;
use super::given;
use crate::api::AppState;
use crate::api::events::{deliveries, search_query};
use crate::console::ConsoleError;
use crate::console::layout::{page, time};
use crate::console::session::Viewer;
use crate::events::{self, search};
use crate::history;
use crate::model::{DeliveryStatus, EventId};

/// Events on one page.
const PAGE: usize = 50;

#[derive(Debug, Deserialize)]
pub struct SearchForm {
    tenant: Option<String>,
    event_type: Option<String>,
    destination_id: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
}

fn when(field: &Option<String>, name: &str) -> Result<Option<DateTime<Utc>>, ConsoleError> {
    given(field)
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ConsoleError::invalid(format!(
                        "{name}: {e} (RFC 3339, e.g. 2026-01-31T12:00:00Z)"
                    ))
                })
        })
        .transpose()
}

const STATUSES: [&str; 5] = [
    "pending",
    "retrying",
    "delivered",
    "dead_lettered",
    "throttled",
];

pub async fn search(
    viewer: Viewer,
    State(state): State<AppState>,
    Query(f): Query<SearchForm>,
) -> Result<Markup, ConsoleError> {
    let tenant = viewer.scope(given(&f.tenant))?;
    let status: Option<DeliveryStatus> = given(&f.status)
        .map(|s| serde_json::from_value(serde_json::Value::String(s.into())))
        .transpose()
        .map_err(|_| ConsoleError::invalid("status is not a delivery status"))?;
    let query = search_query(
        &state,
        &viewer.access,
        tenant,
        given(&f.event_type).map(String::from),
        given(&f.destination_id).map(String::from),
    )
    .await?;
    let query = events::Query {
        since: when(&f.since, "since")?,
        until: when(&f.until, "until")?,
        status,
        ..query
    };
    let cursor = given(&f.cursor).map(events::Cursor::parse).transpose()?;
    let found = search::search(deliveries(&state), &query, cursor, PAGE).await?;
    let keep = |name: &str, v: &Option<String>| {
        given(v)
            .map(|v| format!("&{name}={}", urlencode(v)))
            .unwrap_or_default()
    };
    let filters = format!(
        "{}{}{}{}{}{}",
        keep("tenant", &f.tenant),
        keep("event_type", &f.event_type),
        keep("destination_id", &f.destination_id),
        keep("status", &f.status),
        keep("since", &f.since),
        keep("until", &f.until)
    );
    let body = html! {
        form.filters method="get" {
            @if viewer.is_admin() { label { "Tenant" input name="tenant" value=[given(&f.tenant)]; } }
            label { "Type (pattern)" input name="event_type" value=[given(&f.event_type)] placeholder="order.*"; }
            label { "Destination" input name="destination_id" value=[given(&f.destination_id)]; }
            label { "Status" select name="status" {
                option value="" { "any" }
                @for s in STATUSES { option value=(s) selected[given(&f.status) == Some(s)] { (s) } }
            } }
            label { "Since" input name="since" value=[given(&f.since)] placeholder="2026-01-31T00:00:00Z"; }
            label { "Until" input name="until" value=[given(&f.until)]; }
            button type="submit" { "Search" }
        }
        table #events {
            thead { tr { th { "Stored" } th { "Event" } th { "Type" } th { "Tenant" } th { "Deliveries" } } }
            tbody {
                @for e in &found.events {
                    tr {
                        td { (time(&e.stored_at)) }
                        td { a href={ "/console/events/" (e.id) } { (e.id) } }
                        td { (e.event_type) }
                        td { (e.tenant) }
                        td { @for d in &e.deliveries {
                            span class={ "badge " (status_name(d.status)) } title=(d.destination_id) { (status_name(d.status)) } " "
                        } }
                    }
                }
            }
        }
        @if found.events.is_empty() { p.muted { "No events on this page." } }
        @if let Some(next) = found.next {
            p { a #next href={ "/console/events?cursor=" (next) (filters) } { "Older events" } }
        }
    };
    Ok(page("Events", Some(&viewer), body))
}

pub fn status_name(s: DeliveryStatus) -> &'static str {
    match s {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Retrying => "retrying",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::DeadLettered => "dead_lettered",
        DeliveryStatus::Throttled => "throttled",
    }
}

pub fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub async fn show(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Markup, ConsoleError> {
    let missing = || ConsoleError::not_found(format!("event {raw}"));
    let id = EventId::parse(raw.clone()).map_err(|_| missing())?;
    let events::EventDetail {
        stored,
        attempts,
        deliveries: found,
    } = deliveries(&state)
        .event(&id, |tenant| viewer.owns(tenant))
        .await?
        .ok_or_else(missing)?;
    let timeline = history::by_destination(&attempts);
    let envelope = stored
        .envelope
        .as_ref()
        .map(|e| serde_json::to_string_pretty(e).unwrap_or_default());
    let body = html! {
        p { "Tenant " (stored.tenant) ", stream sequence " (stored.seq)
            @if let Some(t) = stored.stored_at { ", stored " (time(&t)) } }
        h2 { "Envelope" }
        @match &envelope {
            Some(text) => pre #envelope { (text) },
            None => p.muted { "No longer on the stream (retention removed it)." },
        }
        h2 { "Deliveries" }
        @if found.is_empty() { p.muted { "No destination wants this event." } }
        @for d in &found {
            section.delivery data-destination=(d.destination_id) data-status=(status_name(d.status)) {
                h2 {
                    a href={ "/console/destinations/" (d.destination_id) } { (d.destination_id) } " "
                    span class={ "badge " (status_name(d.status)) } { (status_name(d.status)) }
                }
                ol.timeline {
                    @for a in timeline.get(&d.destination_id).into_iter().flatten() {
                        li {
                            strong { "Attempt " (a.attempt) } " · " (time(&a.started_at)) " · "
                            span class={ "badge " (outcome(a)) } { (outcome(a)) }
                            @if let Some(s) = a.status { " · HTTP " (s) }
                            " · " (a.duration_ms) " ms"
                            @if let Some(e) = &a.error { " · " (e) }
                            @if let Some(n) = &a.next_attempt_at { " · next attempt " (time(n)) }
                            @if let Some(b) = &a.response_body { details { summary { "Response body" } pre { (b) } } }
                        }
                    }
                    @if d.attempts == 0 { li.muted { "No attempt yet." } }
                }
            }
        }
    };
    Ok(page(&format!("Event {id}"), Some(&viewer), body))
}
