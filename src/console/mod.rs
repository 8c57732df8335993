//! The web console at `/console`: HTML rendered by the binary (maud), its stylesheet and
//! script embedded, readable without JavaScript (the script only refreshes the live
//! parts). It reads and acts through the domain modules (destinations, events, dlq,
//! history), never through the HTTP API.
//!
//! - [`session`]: sign-in, the session cookie, CSRF tokens, the [`session::Viewer`]
//!   every page takes (the one access check).
//! - [`layout`]: the page frame and the embedded assets.
//! - [`health`]: a destination's health (success rate over the last hour, last error,
//!   backlog, circuit).
//! - [`pages`]: destinations, events, dead letters, uploads, the throughput chart.

pub mod health;
pub mod layout;
pub mod pages;
pub mod session;
pub mod throughput;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;

use crate::api::AppState;
use crate::api::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/destinations") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/destinations") }),
        )
        .route("/console/assets/{name}", get(layout::asset))
        .route(
            "/console/sign-in",
            get(pages::sign_in::form).post(pages::sign_in::sign_in),
        )
        .route("/console/sign-out", post(pages::sign_in::sign_out))
        .route("/console/destinations", get(pages::destinations::list))
        .route("/console/destinations/{id}", get(pages::destinations::show))
        .route(
            "/console/destinations/{id}/{operation}",
            post(pages::destinations::operate),
        )
        .route("/console/events", get(pages::events::search))
        .route("/console/events/{id}", get(pages::events::show))
        .route("/console/dlq", get(pages::dlq::list))
        .route("/console/dlq/{operation}", post(pages::dlq::operate))
        .route("/console/throughput.svg", get(throughput::chart))
        .route("/console/uploads", get(pages::uploads::list))
        .route("/console/uploads/{id}", get(pages::uploads::show))
}

/// The console's upload form: outside the API's body limit and timeout, under the
/// uploads' own (`ingest.upload_max_bytes`, counted while the file streams, and
/// `ingest.upload_timeout_ms`), like `POST /v1/uploads`.
pub fn upload_router(cfg: &crate::config::Config) -> Router<AppState> {
    Router::new()
        .route("/console/uploads/new", post(pages::uploads::upload))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            cfg.ingest.upload_timeout,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
}

/// What a console page can fail with; rendered as a page with the API's status rules.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl ConsoleError {
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::Api(ApiError::NotFound(format!("{what} not found")))
    }

    pub fn invalid(message: impl std::fmt::Display) -> Self {
        Self::Api(ApiError::Invalid(message.to_string()))
    }
}

macro_rules! console_from {
    ($($t:ty),*) => {$(
        impl From<$t> for ConsoleError {
            fn from(e: $t) -> Self {
                Self::Api(e.into())
            }
        }
    )*};
}
console_from!(
    crate::broker::BrokerError,
    crate::destinations::DestinationError,
    crate::dlq::DlqError,
    crate::events::SearchError,
    crate::files::FilesError,
    crate::ingest::IngestError
);

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            Self::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.clone()),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            Self::Api(e) => {
                let status = e.status();
                if status.is_server_error() {
                    tracing::error!(code = e.code(), error = %e, "console page failed");
                }
                (status, e.to_string())
            }
        };
        let body = html! {
            div.error { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) ": " (message) }
            @if status == StatusCode::UNAUTHORIZED {
                p { a href="/console/sign-in" { "Sign in" } }
            } @else {
                p { a href="/console/destinations" { "Back to the destinations" } }
            }
        };
        let mut response = (status, layout::page("Error", None, body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
