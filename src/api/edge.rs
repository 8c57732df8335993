//! The outer layer of every API request, in one `from_fn`: the server span (`traced.rs`),
//! the request counter, `Retry-After` on a 503 that has none, and inside them the access
//! guard (`access.rs`). One layer and not four: each `Router::layer` boxes every route once
//! more, and costs a boxed service clone, a boxed future and a clone of the state per
//! request (docs/PERFORMANCE.md, "Ingest, third cuts").

use std::cell::RefCell;
use std::collections::HashMap;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use metrics::Counter;

use super::{AppState, access, traced};
use crate::telemetry::metrics as m;

pub async fn edge(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map(MatchedPath::as_str);
    let method = req.method().clone();
    let span = traced::server_span(&req, route.unwrap_or("unmatched"));
    let mut response = traced::run_in(span, access::check(&state, route, req, next)).await;
    if response.status() == StatusCode::SERVICE_UNAVAILABLE
        && !response.headers().contains_key(header::RETRY_AFTER)
    {
        let secs = state.cfg.api.retry_after.as_secs().max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    count(route.unwrap_or("unmatched"), &method, response.status());
    response
}

/// Counters this thread has used, by route template, then method and status.
type Counters = HashMap<String, Vec<(Method, u16, Counter)>>;

/// Kept per thread (so that looking one up takes no lock and touches no shared memory
/// but the counter itself), and bounded: a method or route an attacker can vary does not
/// grow it past this; beyond it a request registers its counter as it would uncached.
const CACHED_PER_THREAD: usize = 512;

thread_local! {
    static COUNTERS: RefCell<(Counters, usize)> = RefCell::new((HashMap::new(), 0));
}

/// `hookstream_http_requests_total{route, method, status}` + 1. `metrics::counter!` with
/// owned labels formats them and hashes the key into the registry on every call; a handle
/// is the same counter, so it is looked up once per thread and kept.
fn count(route: &str, method: &Method, status: StatusCode) {
    let status = status.as_u16();
    let register = || {
        metrics::counter!(
            m::HTTP_REQUESTS,
            "route" => route.to_string(),
            "method" => method.to_string(),
            "status" => status.to_string()
        )
    };
    COUNTERS.with_borrow_mut(|(counters, cached)| {
        if let Some(known) = counters
            .get(route)
            .and_then(|c| c.iter().find(|(m, s, _)| m == method && *s == status))
        {
            known.2.increment(1);
            return;
        }
        let counter = register();
        counter.increment(1);
        if *cached < CACHED_PER_THREAD {
            *cached += 1;
            counters
                .entry(route.to_string())
                .or_default()
                .push((method.clone(), status, counter));
        }
    });
}
