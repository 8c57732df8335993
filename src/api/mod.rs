//! The HTTP API: one router per resource, the shared state, and the middleware that every
//! route goes through (body limit, timeout, and `edge.rs`: request metrics, Retry-After on
//! 503, the request's server span, and the access guard of `/v1`: `access.rs`).

pub mod access;
pub mod api_keys;
pub mod destinations;
pub mod dlq;
mod edge;
pub mod error;
pub mod events;
pub mod health;
pub mod json;
pub mod openapi;
pub mod stats;
pub mod traced;
pub mod uploads;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;

use self::error::ApiError;
use crate::broker::Broker;
use crate::config::Config;
use crate::destinations::DestinationStore;
use crate::destinations::Registry;
use crate::ingest::Ingestor;

/// What every handler and middleware reads. One `Arc`: axum clones the state into every
/// layer of every request, and cloning a dozen handles (each an `Arc` or more) cost the
/// ingest path 8 % of its CPU (docs/PERFORMANCE.md, ingest profile).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub broker: Broker,
    pub cfg: Arc<Config>,
    pub ingestor: Ingestor,
    pub flow: Arc<crate::flow::Flow>,
    pub destinations: DestinationStore,
    /// The worker's view of the destinations, when this process runs a worker.
    pub registry: Option<Arc<Registry>>,
    /// False until the worker (if any) has loaded destinations and done its first sweep.
    pub worker_ready: Arc<AtomicBool>,
    pub metrics: PrometheusHandle,
    /// The console's throughput samples.
    pub console: Arc<crate::telemetry::throughput::Samples>,
    /// Every valid API key, checked by `access::guard`.
    pub keys: crate::access::KeyStore,
    /// Uploads and folder files (`src/files/`).
    pub files: crate::files::Files,
}

impl AppState {
    pub fn is_worker_ready(&self) -> bool {
        self.worker_ready.load(Ordering::Acquire)
    }
}

/// The API's routes, with `front` (the console, which builds on the API's state and
/// access check) served behind the same layers.
pub fn router(state: AppState, front: Router<AppState>) -> Router {
    let body_limit = state.cfg.api.body_limit_bytes;
    let timeout = state.cfg.api.request_timeout;
    let timed = Router::new()
        .merge(events::router())
        .merge(destinations::router())
        .merge(dlq::router())
        .merge(stats::router())
        .merge(health::router())
        .merge(openapi::router())
        .merge(front)
        .merge(api_keys::router())
        // One layer for both (each `Router::layer` boxes every route once more, a boxed
        // service clone and a boxed future per request); the timeout innermost as before.
        .layer(
            ServiceBuilder::new()
                .layer(DefaultBodyLimit::max(body_limit))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    timeout,
                )),
        );
    Router::new()
        .merge(timed)
        // Uploads stream files of up to a gigabyte: their own body limit and timeout.
        .merge(uploads::router(&state.cfg))
        .merge(crate::console::upload_router(&state.cfg))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this route does not take that method".into())
        })
        // The server span, the request counter, Retry-After and (inside them, so that a
        // 401 or 403 is counted like any answer) the access guard: one layer (`edge.rs`).
        .layer(middleware::from_fn_with_state(state.clone(), edge::edge))
        .with_state(state)
}

/// What a worker-only process serves: health and metrics (`/metrics` behind an admin
/// key when `api.auth.protect_metrics`).
pub fn worker_router(state: AppState) -> Router {
    health::router()
        .layer(middleware::from_fn_with_state(state.clone(), access::guard))
        .with_state(state)
}

/// `?limit=` and `?cursor=` of list routes.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// At most this many items (1 to 1000, default 100).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this tenant's items.
    pub tenant: Option<String>,
}

impl Page {
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(100),
            Some(n @ 1..=1000) => Ok(n),
            Some(_) => Err(ApiError::Invalid("limit must be 1 to 1000".into())),
        }
    }

    pub fn tenant(&self) -> Result<Option<crate::model::TenantId>, ApiError> {
        self.tenant
            .as_deref()
            .map(crate::model::TenantId::parse)
            .transpose()
            .map_err(|e| ApiError::Invalid(e.to_string()))
    }
}

/// Rejections of `Path` and `Query` in the API's error format.
pub fn bad_request(e: impl std::fmt::Display) -> ApiError {
    ApiError::Invalid(e.to_string())
}
