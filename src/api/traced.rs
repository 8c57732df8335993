//! The server span of each API request (when traces are on): named by the matched route
//! template, never the raw path, and parented by the request's `traceparent`. Operations
//! endpoints (`/metrics`, `/healthz`, `/readyz`) are not traced: a scrape every few
//! seconds would bury the events' traces.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::telemetry::{spans, traces};

const UNTRACED: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

pub async fn trace_requests(req: Request, next: Next) -> Response {
    if !traces::enabled() {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str());
    if UNTRACED.contains(&route) {
        return next.run(req).await;
    }
    let span = spans::http_server(req.method(), route, req.headers());
    let response = next.run(req).instrument(span.clone()).await;
    spans::record_http_server_status(&span, response.status().as_u16());
    response
}
