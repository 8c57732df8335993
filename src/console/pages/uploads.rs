//! Uploads and folder files (`src/files/`): their status and counts, one file's page
//! with its rejected lines, and a form to upload a file. The same access check as
//! `/v1/uploads`: a tenant key lists and uploads for its own tenant only (403 for
//! another named, 404 for another's file); the form posts to the same code path as
//! `POST /v1/uploads` with a multipart body whose `csrf` field comes before the file.

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::destinations::ListQuery;
use super::given;
use crate::api::AppState;
use crate::api::uploads::{UploadQuery, asked_format, find, page_of, store_file_field};
use crate::console::ConsoleError;
use crate::console::layout::{csrf, page, time};
use crate::console::session::Viewer;
use crate::files::{FileRecord, Origin, Status};
use crate::model::TenantId;

/// Files on one page of the list.
const PAGE: usize = 50;
/// Rejected lines shown on a file's page (the API pages through all that are kept).
const ERRORS_SHOWN: usize = 200;

pub async fn list(
    viewer: Viewer,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let tenant = viewer.scope(given(&q.tenant))?;
    let (files, next) = page_of(&state, tenant.as_ref(), given(&q.cursor), PAGE);
    let body = html! {
        p.muted {
            "Files uploaded with the form below, sent to " code { "POST /v1/uploads" } " or "
            code { "hookstream upload" } ", and files of the watched folder: one event per line."
        }
        form #upload method="post" action="/console/uploads/new" enctype="multipart/form-data" {
            (csrf(&viewer))
            @if viewer.is_admin() {
                label { "Tenant" input name="tenant" placeholder="default"; }
            }
            label { "Event type (csv)" input name="type" placeholder="order.created"; }
            label { "Type column (csv)" input name="type_column"; }
            label { "File (.csv, .ndjson)" input type="file" name="file" required; }
            button type="submit" { "Upload" }
        }
        @if viewer.is_admin() {
            form.filters method="get" {
                label { "Tenant" input name="tenant" value=[given(&q.tenant)]; }
                button type="submit" { "Filter" }
            }
        }
        table #uploads {
            thead { tr {
                th { "File" } th { "Tenant" } th { "Source" } th { "Status" } th { "Lines" }
                th { "Accepted" } th { "Rejected" } th { "Duplicates" } th { "Created" } th { "Finished" }
            } }
            tbody {
                @for f in &files {
                    tr data-upload=(f.id) {
                        td { a href={ "/console/uploads/" (f.id) } { (f.id) } br; span.muted { (label(f)) } }
                        td { (f.tenant) }
                        td { (source(f)) }
                        td { span class={ "badge " (status(f.status)) } { (status(f.status)) } }
                        td { (f.lines) }
                        td { (f.accepted) }
                        td { (f.rejected) }
                        td { (f.duplicates) }
                        td { (time(&f.created_at)) }
                        td { @if let Some(t) = &f.finished_at { (time(t)) } }
                    }
                }
            }
        }
        @if files.is_empty() { p.muted { "No uploads." } }
        @if let Some(next) = next {
            p { a href={ "/console/uploads?cursor=" (next) @if let Some(t) = given(&q.tenant) { "&tenant=" (t) } } { "Next page" } }
        }
    };
    Ok(page("Uploads", Some(&viewer), body))
}

/// `POST /console/uploads/new`: the upload form. Text fields first (`csrf` checked
/// before any byte of the file is stored), then `file`; answers with the upload's page.
pub async fn upload(
    viewer: Viewer,
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ConsoleError> {
    let mut form = Multipart::from_request(request, &state)
        .await
        .map_err(|e| ConsoleError::invalid(e.body_text()))?;
    let mut checked = false;
    let mut q = UploadQuery::default();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ConsoleError::invalid(e.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            if !checked {
                viewer.check_csrf("")?;
            }
            let tenant = viewer
                .access
                .scope_text(q.tenant.as_deref())?
                .unwrap_or_else(TenantId::default_tenant);
            let asked = asked_format(q.format.as_deref())?;
            let uploaded = store_file_field(&state, tenant, &q, asked, field).await?;
            viewer
                .access
                .audit("upload.create", &uploaded.tenant, &uploaded.id);
            let to = format!("/console/uploads/{}", uploaded.id);
            return Ok(Redirect::to(&to).into_response());
        }
        let value = field
            .text()
            .await
            .map_err(|e| ConsoleError::invalid(e.body_text()))?;
        let value = Some(value.trim().to_string()).filter(|v| !v.is_empty());
        match name.as_str() {
            "csrf" => {
                viewer.check_csrf(value.as_deref().unwrap_or_default())?;
                checked = true;
            }
            "tenant" => q.tenant = value,
            "type" => q.event_type = value,
            "type_column" => q.type_column = value,
            "format" => q.format = value,
            _ => {}
        }
    }
    Err(ConsoleError::invalid("the form has no file"))
}

pub async fn show(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    let f = find(&state, &viewer.access, &id).await?;
    let kept = state.files.errors(&f.id).await?;
    let shown = &kept.lines[..kept.lines.len().min(ERRORS_SHOWN)];
    let body = html! {
        table {
            tr { th { "Name" } td { (label(&f)) } }
            tr { th { "Tenant" } td { (f.tenant) } }
            tr { th { "Source" } td { (source(&f)) } }
            tr { th { "Format" } td { (f.format.as_str()) } }
            tr { th { "Event type" } td {
                @if let Some(t) = &f.event_type { (t) }
                @if let Some(c) = &f.type_column { "from column " code { (c) } }
            } }
            tr { th { "Size" } td { (f.size) " bytes" } }
            tr { th { "Status" } td #status data-status=(status(f.status)) {
                span class={ "badge " (status(f.status)) } { (status(f.status)) }
                @if let Some(e) = &f.error { " " (e) }
            } }
            tr { th { "Lines" } td {
                (f.lines) " read: " (f.accepted) " accepted, " (f.rejected) " rejected, "
                (f.duplicates) " duplicates"
            } }
            tr { th { "Created" } td { (time(&f.created_at)) } }
            @if let Some(t) = &f.started_at { tr { th { "Started" } td { (time(t)) } } }
            @if let Some(t) = &f.finished_at { tr { th { "Finished" } td { (time(t)) } } }
        }
        @if f.accepted > 0 {
            p { a href={ "/console/events?tenant=" (f.tenant) } { "Events of tenant " (f.tenant) } }
        }
        h2 { "Rejected lines" }
        @if shown.is_empty() {
            p.muted { "None." }
        } @else {
            table #rejected {
                thead { tr { th { "Line" } th { "Reason" } th { "Text" } } }
                tbody {
                    @for l in shown {
                        tr { td { (l.line) } td { (l.reason) } td { code { (l.text) } } }
                    }
                }
            }
            @if f.rejected > shown.len() as u64 {
                p.muted {
                    "The first " (shown.len()) " of " (f.rejected) " rejected lines. All that are kept: "
                    code { "GET /v1/uploads/" (f.id) "/errors" }
                }
            }
        }
    };
    Ok(page(&format!("Upload {}", f.id), Some(&viewer), body))
}

fn label(f: &FileRecord) -> &str {
    f.name.as_deref().unwrap_or("(no name)")
}

fn source(f: &FileRecord) -> &'static str {
    match f.origin {
        Origin::Upload { .. } => "upload",
        Origin::Folder { .. } => "folder",
    }
}

fn status(s: Status) -> &'static str {
    match s {
        Status::Queued => "queued",
        Status::Processing => "processing",
        Status::Done => "done",
        Status::Failed => "failed",
    }
}
