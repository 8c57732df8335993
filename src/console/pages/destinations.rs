//! Destinations with their health, one destination's attempts, and its operations
//! (pause, resume, rotate secret, send a test event, edit event types, re-enable).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use futures::StreamExt;
use maud::{Markup, html};
use serde::Deserialize;

use super::given;
use crate::api::AppState;
use crate::console::ConsoleError;
use crate::console::health::{self, Health};
use crate::console::layout::{csrf, page, time};
use crate::console::session::Viewer;
use crate::model::{Destination, DestinationId, DestinationPatch, EventPattern, TenantId};

/// Destinations on one page of the list.
const PAGE: usize = 50;
/// Attempts shown on a destination's page.
const ATTEMPTS_SHOWN: usize = 50;

/// A list's query: a tenant (admins), and the cursor of the next page. Also the uploads'.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub tenant: Option<String>,
    pub cursor: Option<String>,
}

/// A page of destinations sorted by id, after `cursor`, of `tenant` (or every tenant):
/// from the worker's view when this process has one, else from the bucket.
async fn page_of(
    state: &AppState,
    tenant: Option<&TenantId>,
    cursor: Option<&str>,
) -> Result<(Vec<Destination>, Option<String>), ConsoleError> {
    let Some(registry) = &state.registry else {
        return Ok(state.destinations.list(tenant, cursor, PAGE).await?);
    };
    let mut all: Vec<_> = registry
        .all()
        .into_iter()
        .filter(|d| tenant.is_none_or(|t| &d.tenant == t))
        .filter(|d| cursor.is_none_or(|c| d.id.as_str() > c))
        .collect();
    all.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    let more = all.len() > PAGE;
    all.truncate(PAGE);
    let next = more.then(|| all.last().map(|d| d.id.to_string())).flatten();
    Ok((all.into_iter().map(|d| (*d).clone()).collect(), next))
}

async fn health_of(
    state: &AppState,
    destinations: &[Destination],
) -> Result<Vec<Health>, ConsoleError> {
    let top = health::attempts_top(&state.broker).await?;
    let healths: Vec<Result<Health, _>> = futures::stream::iter(destinations.iter().cloned())
        .map(|d| {
            let (broker, flow) = (state.broker.clone(), state.flow.clone());
            async move { health::of(&broker, &flow, &d, top).await }
        })
        .buffered(16)
        .collect()
        .await;
    Ok(healths.into_iter().collect::<Result<_, _>>()?)
}

pub async fn list(
    viewer: Viewer,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let tenant = viewer.scope(given(&q.tenant))?;
    let (destinations, next) = page_of(&state, tenant.as_ref(), given(&q.cursor)).await?;
    let healths = health_of(&state, &destinations).await?;
    let body = html! {
        img.chart src="/console/throughput.svg" data-live-img="2000" width="600" height="120"
            alt="Delivered and failed attempts per second";
        @if viewer.is_admin() {
            form.filters method="get" {
                label { "Tenant" input name="tenant" value=[given(&q.tenant)]; }
                button type="submit" { "Filter" }
            }
        }
        section #destinations data-live="3000" {
            table {
                thead { tr {
                    th { "Destination" } th { "Tenant" } th { "Health" } th { "Success (1 h)" }
                    th { "Backlog" } th { "Circuit" } th { "Last error" }
                } }
                tbody {
                    @for (d, h) in destinations.iter().zip(&healths) {
                        tr class=(h.state.as_str()) data-destination=(d.id) data-health=(h.state.as_str()) {
                            td { a href={ "/console/destinations/" (d.id) } { (d.id) } br; span.muted { (d.url) } }
                            td { (d.tenant) }
                            td { span class={ "badge " (h.state.as_str()) } { (h.state.as_str()) }
                                @if d.paused { " paused" }
                                @if !d.enabled { " disabled" @if let Some(r) = &d.disabled_reason { " (" (r) ")" } } }
                            td { (rate(h)) }
                            td { (h.pending + h.retrying) }
                            td { span class={ "badge " (phase(h)) } { (phase(h)) } }
                            td { @if let Some(e) = &h.last_error { (e) } }
                        }
                    }
                }
            }
            @if destinations.is_empty() { p.muted { "No destinations." } }
        }
        @if let Some(next) = next {
            p { a href={ "/console/destinations?cursor=" (next) @if let Some(t) = given(&q.tenant) { "&tenant=" (t) } } { "Next page" } }
        }
    };
    Ok(page("Destinations", Some(&viewer), body))
}

fn rate(h: &Health) -> String {
    match h.success_rate {
        Some(r) => format!("{:.0} % of {}", r * 100.0, h.attempts_last_hour),
        None => "no attempts".into(),
    }
}

fn phase(h: &Health) -> &'static str {
    match h.circuit.state {
        crate::model::circuit::Phase::Closed => "closed",
        crate::model::circuit::Phase::Open => "open",
        crate::model::circuit::Phase::HalfOpen => "half_open",
    }
}

/// The destination, if it exists and is the viewer's (else 404, as in the API).
async fn owned(state: &AppState, viewer: &Viewer, raw: &str) -> Result<Destination, ConsoleError> {
    let id = DestinationId::parse(raw)
        .map_err(|_| ConsoleError::not_found(format!("destination {raw}")))?;
    match state.destinations.get(&id).await? {
        Some((d, _)) if viewer.owns(d.tenant.as_str()) => Ok(d),
        _ => Err(ConsoleError::not_found(format!("destination {raw}"))),
    }
}

pub async fn show(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    let d = owned(&state, &viewer, &id).await?;
    Ok(page(
        &format!("Destination {}", d.id),
        Some(&viewer),
        destination_body(&state, &viewer, &d, None).await?,
    ))
}

async fn destination_body(
    state: &AppState,
    viewer: &Viewer,
    d: &Destination,
    notice: Option<Markup>,
) -> Result<Markup, ConsoleError> {
    let top = health::attempts_top(&state.broker).await?;
    let h = health::of(&state.broker, &state.flow, d, top).await?;
    let attempts = health::recent_attempts(&state.broker, d, top, ATTEMPTS_SHOWN, None).await?;
    let types: Vec<&str> = d.event_types.iter().map(EventPattern::as_str).collect();
    let action = |op: &str| format!("/console/destinations/{}/{op}", d.id);
    Ok(html! {
        @if let Some(n) = notice { (n) }
        table {
            tr { th { "URL" } td { (format!("{:?}", d.method).to_uppercase()) " " (d.url) } }
            tr { th { "Tenant" } td { (d.tenant) } }
            tr { th { "Event types" } td { (types.join(", ")) } }
            tr { th { "Health" } td #health data-health=(h.state.as_str()) {
                span class={ "badge " (h.state.as_str()) } { (h.state.as_str()) }
                " success " (rate(&h)) ", backlog " (h.pending) " pending + " (h.retrying) " in flight, circuit "
                span class={ "badge " (phase(&h)) } { (phase(&h)) }
                @if d.paused { " · paused" }
                @if !d.enabled { " · disabled" @if let Some(r) = &d.disabled_reason { " (" (r) ")" } }
            } }
            @if let Some(e) = &h.last_error { tr { th { "Last error" } td { (e) } } }
        }
        h2 { "Operations" }
        p {
            @if d.paused {
                form.inline method="post" action=(action("resume")) { (csrf(viewer)) button #resume { "Resume" } }
            } @else {
                form.inline method="post" action=(action("pause")) { (csrf(viewer)) button #pause { "Pause" } }
            }
            " "
            @if !d.enabled {
                form.inline method="post" action=(action("enable")) { (csrf(viewer)) button #enable { "Re-enable" } }
                " "
            }
            form.inline method="post" action=(action("test")) { (csrf(viewer)) button #send-test { "Send a test event" } }
            " "
            form.inline method="post" action=(action("rotate-secret")) { (csrf(viewer)) button.danger #rotate { "Rotate secret" } }
        }
        form.filters method="post" action=(action("event-types")) {
            (csrf(viewer))
            label { "Event types (comma-separated)" input name="event_types" size="60" value=(types.join(", ")); }
            button type="submit" { "Save" }
        }
        h2 { "Recent attempts" }
        table #attempts {
            thead { tr { th { "Started" } th { "Event" } th { "Attempt" } th { "Outcome" } th { "Status" } th { "Duration" } th { "Error" } } }
            tbody {
                @for a in &attempts {
                    tr {
                        td { (time(&a.started_at)) }
                        td { a href={ "/console/events/" (a.event_id) } { (a.event_id) } br; span.muted { (a.event_type) } }
                        td { (a.attempt) }
                        td { span class={ "badge " (outcome(a)) } { (outcome(a)) } }
                        td { @if let Some(s) = a.status { (s) } }
                        td { (a.duration_ms) " ms" }
                        td { @if let Some(e) = &a.error { (e) } }
                    }
                }
            }
        }
        @if attempts.is_empty() { p.muted { "No attempts yet." } }
    })
}

pub fn outcome(a: &crate::model::AttemptRecord) -> &'static str {
    match a.outcome {
        crate::model::AttemptOutcome::Delivered => "delivered",
        crate::model::AttemptOutcome::Retrying => "retrying",
        crate::model::AttemptOutcome::DeadLettered => "dead_lettered",
    }
}

#[derive(Debug, Deserialize)]
pub struct OperationForm {
    #[serde(default)]
    csrf: String,
    event_types: Option<String>,
}

pub async fn operate(
    viewer: Viewer,
    State(state): State<AppState>,
    Path((id, operation)): Path<(String, String)>,
    Form(form): Form<OperationForm>,
) -> Result<Response, ConsoleError> {
    viewer.check_csrf(&form.csrf)?;
    let d = owned(&state, &viewer, &id).await?;
    let back = Redirect::to(&format!("/console/destinations/{}", d.id)).into_response();
    match operation.as_str() {
        "pause" => state.destinations.set_paused(&d.id, true).await.map(drop)?,
        "resume" => state
            .destinations
            .set_paused(&d.id, false)
            .await
            .map(drop)?,
        "enable" => {
            let patch = DestinationPatch {
                enabled: Some(true),
                ..Default::default()
            };
            state.destinations.patch(&d.id, patch).await.map(drop)?
        }
        "event-types" => {
            let types = form
                .event_types
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(EventPattern::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(ConsoleError::invalid)?;
            let patch = DestinationPatch {
                event_types: Some(types),
                ..Default::default()
            };
            state.destinations.patch(&d.id, patch).await.map(drop)?
        }
        "test" => {
            let event = crate::destinations::test_event(&d);
            let accepted = state
                .ingestor
                .ingest(event, None, &Default::default())
                .await?;
            let notice = html! { div.notice { "Test event " a href={ "/console/events/" (accepted.id) } { (accepted.id) } " sent." } };
            let body = destination_body(&state, &viewer, &d, Some(notice)).await?;
            return Ok(page(&format!("Destination {}", d.id), Some(&viewer), body).into_response());
        }
        "rotate-secret" => {
            let grace = crate::destinations::ROTATION_GRACE;
            let (d, key) = state.destinations.rotate_secret(&d.id, None, grace).await?;
            // Shown this once, like the API's answer; never again.
            let notice = html! { div.notice {
                "New signing secret (shown once; the old one keeps signing for "
                (grace.as_secs()) " s): " span.secret #new-secret { (key.expose()) }
            } };
            let body = destination_body(&state, &viewer, &d, Some(notice)).await?;
            return Ok(page(&format!("Destination {}", d.id), Some(&viewer), body).into_response());
        }
        _ => return Err(ConsoleError::not_found(format!("operation {operation}"))),
    }
    Ok(back)
}
