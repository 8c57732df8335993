//! The server span of each API request (when traces are on): named by the matched route
//! template, never the raw path, and parented by the request's `traceparent`. Operations
//! endpoints (`/metrics`, `/healthz`, `/readyz`) are not traced: a scrape every few
//! seconds would bury the events' traces.

use axum::extract::Request;
use axum::response::Response;
use tracing::Instrument;

use crate::telemetry::{spans, traces};

const UNTRACED: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// The server span for a request to `route`, or none (traces off, or an operations route).
pub fn server_span(req: &Request, route: &str) -> Option<tracing::Span> {
    if !traces::enabled() || UNTRACED.contains(&route) {
        return None;
    }
    Some(spans::http_server(req.method(), route, req.headers()))
}

/// Runs the rest of the request (`rest`) inside `span` (when there is one) and records
/// its status.
pub async fn run_in(span: Option<tracing::Span>, rest: impl Future<Output = Response>) -> Response {
    let Some(span) = span else {
        return rest.await;
    };
    let response = rest.instrument(span.clone()).await;
    spans::record_http_server_status(&span, response.status().as_u16());
    response
}
