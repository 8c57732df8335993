//! Dead letters: filters, a dry run (what a replay or purge would do), then the replay
//! or purge itself, each a form of its own so nothing happens without the preview.

use axum::Form;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::given;
use crate::api::AppState;
use crate::console::ConsoleError;
use crate::console::layout::{csrf, page, time};
use crate::console::session::Viewer;
use crate::dlq::purge::{self, PurgeRequest};
use crate::dlq::replay::{self, ReplayRequest};
use crate::dlq::{DeadLetterFilter, Order, Target, browse};
use crate::model::{DestinationId, EventPattern};

/// Dead letters listed on one page, and handled by one replay or purge.
const PAGE: usize = 50;
const BATCH: usize = 1000;

/// `DeadLetterFilter` as a form sends it: text, an empty field meaning no filter (which
/// the typed filter would refuse), so it is read apart and parsed by [`selection`].
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    csrf: String,
    tenant: Option<String>,
    destination_id: Option<String>,
    event_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

fn when(field: &Option<String>) -> Result<Option<DateTime<Utc>>, ConsoleError> {
    given(field)
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| ConsoleError::invalid(format!("time {s:?}: {e}")))
        })
        .transpose()
}

fn selection(viewer: &Viewer, f: &Filters) -> Result<DeadLetterFilter, ConsoleError> {
    Ok(DeadLetterFilter {
        tenant: viewer.scope(given(&f.tenant))?,
        destination_id: given(&f.destination_id)
            .map(DestinationId::parse)
            .transpose()
            .map_err(ConsoleError::invalid)?,
        event_type: given(&f.event_type)
            .map(EventPattern::parse)
            .transpose()
            .map_err(ConsoleError::invalid)?,
        since: when(&f.since)?,
        until: when(&f.until)?,
    })
}

/// The filters again, as hidden fields of a confirm form.
fn hidden(f: &Filters) -> Markup {
    html! {
        @for (name, value) in [("tenant", &f.tenant), ("destination_id", &f.destination_id),
                               ("event_type", &f.event_type), ("since", &f.since), ("until", &f.until)] {
            @if let Some(v) = given(value) { input type="hidden" name=(name) value=(v); }
        }
    }
}

async fn listing(
    state: &AppState,
    viewer: &Viewer,
    f: &Filters,
    notice: Option<Markup>,
) -> Result<Markup, ConsoleError> {
    let selection = selection(viewer, f)?;
    let found = browse::list(&state.broker, &selection, Order::Newest, None, PAGE).await?;
    Ok(html! {
        @if let Some(n) = notice { (n) }
        form.filters method="get" action="/console/dlq" {
            @if viewer.is_admin() { label { "Tenant" input name="tenant" value=[given(&f.tenant)]; } }
            label { "Destination" input name="destination_id" value=[given(&f.destination_id)]; }
            label { "Type (pattern)" input name="event_type" value=[given(&f.event_type)]; }
            label { "Since" input name="since" value=[given(&f.since)]; }
            label { "Until" input name="until" value=[given(&f.until)]; }
            button type="submit" { "Filter" }
        }
        p {
            form.inline method="post" action="/console/dlq/preview-replay" {
                (csrf(viewer)) (hidden(f)) button #preview-replay { "Replay these… (dry run first)" }
            }
            " "
            form.inline method="post" action="/console/dlq/preview-purge" {
                (csrf(viewer)) (hidden(f)) button.danger #preview-purge { "Purge these… (dry run first)" }
            }
        }
        table #dead-letters {
            thead { tr { th { "Id" } th { "Dead-lettered" } th { "Event" } th { "Destination" } th { "Reason" } th { "Last status" } } }
            tbody {
                @for l in &found.letters {
                    tr {
                        td { (l.seq) }
                        td { (time(&l.dead_lettered_at)) }
                        td { @if let Some(id) = &l.event_id { a href={ "/console/events/" (id) } { (id) } }
                             br; span.muted { (l.event_type.as_deref().unwrap_or("")) } }
                        td { a href={ "/console/destinations/" (l.destination_id) } { (l.destination_id) } }
                        td { (l.reason.as_deref().unwrap_or("")) }
                        td { @if let Some(s) = l.last_status { (s) } " " (l.last_error.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        @if found.letters.is_empty() { p.muted { "No dead letters match." } }
    })
}

pub async fn list(
    viewer: Viewer,
    State(state): State<AppState>,
    Query(f): Query<Filters>,
) -> Result<Markup, ConsoleError> {
    let body = listing(&state, &viewer, &f, None).await?;
    Ok(page("Dead letters", Some(&viewer), body))
}

/// `preview-replay` / `preview-purge` (dry runs) and `replay` / `purge`.
pub async fn operate(
    viewer: Viewer,
    State(state): State<AppState>,
    axum::extract::Path(operation): axum::extract::Path<String>,
    Form(f): Form<Filters>,
) -> Result<Markup, ConsoleError> {
    viewer.check_csrf(&f.csrf)?;
    let target = Target::Filter(selection(&viewer, &f)?);
    let notice = match operation.as_str() {
        "preview-replay" | "replay" => {
            let dry_run = operation == "preview-replay";
            let report = replay::replay(
                &state.broker,
                &state.destinations,
                ReplayRequest {
                    target,
                    tenant: viewer.tenant().cloned(),
                    cursor: None,
                    limit: BATCH,
                    enable_destination: false,
                    dry_run,
                },
            )
            .await?;
            html! { div.notice #report data-outcome=(outcome(dry_run)) {
                @if dry_run {
                    "Dry run: " (report.matched) " dead letters would be replayed"
                    @if !report.skipped.is_empty() { ", " (report.skipped.iter().map(|s| s.count).sum::<u64>()) " skipped (destination deleted or disabled)" }
                    ". "
                    form.inline method="post" action="/console/dlq/replay" {
                        (csrf(&viewer)) (hidden(&f)) button #confirm-replay { "Replay " (report.matched) }
                    }
                } @else {
                    "Replayed " (report.replayed) " of " (report.matched) " dead letters."
                    @if report.next.is_some() { " More match: replay again for the next batch." }
                }
            } }
        }
        "preview-purge" | "purge" => {
            let dry_run = operation == "preview-purge";
            let report = purge::purge(
                &state.broker,
                PurgeRequest {
                    target,
                    tenant: viewer.tenant().cloned(),
                    cursor: None,
                    limit: BATCH,
                    dry_run,
                },
            )
            .await?;
            html! { div.notice #report data-outcome=(outcome(dry_run)) {
                @if dry_run {
                    "Dry run: " (report.matched) " dead letters would be removed for good. "
                    form.inline method="post" action="/console/dlq/purge" {
                        (csrf(&viewer)) (hidden(&f)) button.danger #confirm-purge { "Purge " (report.matched) }
                    }
                } @else {
                    "Purged " (report.purged) " of " (report.matched) " dead letters."
                }
            } }
        }
        _ => return Err(ConsoleError::not_found(format!("operation {operation}"))),
    };
    let body = listing(&state, &viewer, &f, Some(notice)).await?;
    Ok(page("Dead letters", Some(&viewer), body))
}

/// The report's `data-outcome`: which answer the page holds, for a script or a test to
/// tell the confirmed operation's page from its dry run's (both show `#report`).
fn outcome(dry_run: bool) -> &'static str {
    if dry_run { "dry-run" } else { "done" }
}
