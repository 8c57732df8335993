//! The API's one error type: each variant maps to a status and a stable snake_case code,
//! rendered as `{"error":{"code","message"}}`. A 5xx logs its cause chain and answers a
//! plain message; every 503 gets `Retry-After` (added in `api::router`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::error;

use crate::broker::{BrokerError, BrokerErrorKind};
use crate::destinations::DestinationError;
use crate::dlq::DlqError;
use crate::events::SearchError;
use crate::files::FilesError;
use crate::ingest::IngestError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// No API key, or one that is not (or no longer) valid: 401 with
    /// `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// A key whose role may not use the route, or a tenant key naming another tenant.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    ConsumerLimit(String),
    /// A replay or resend to a destination that no longer exists.
    #[error("{0}")]
    DestinationDeleted(String),
    /// A replay or resend to a disabled destination.
    #[error("{0}")]
    DestinationDisabled(String),
    /// The thing existed but is gone for good (e.g. an event removed by retention).
    #[error("{0}")]
    Gone(String),
    /// Over a rate limit: 429 with `Retry-After`.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    #[error("NATS is unavailable; retry later")]
    Unavailable(#[source] BrokerError),
    #[error("the event stream is full; retry later")]
    StreamFull(#[source] BrokerError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) | Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_)
            | Self::ConsumerLimit(_)
            | Self::DestinationDeleted(_)
            | Self::DestinationDisabled(_) => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::StreamFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::Invalid(_) => "invalid_request",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::ConsumerLimit(_) => "consumer_limit_reached",
            Self::DestinationDeleted(_) => "destination_deleted",
            Self::DestinationDisabled(_) => "destination_disabled",
            Self::Gone(_) => "gone",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "broker_unavailable",
            Self::StreamFull(_) => "stream_full",
            Self::Internal(_) => "internal",
        }
    }

    /// The `{"error":{…}}` body, also used per item of a batch.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.code(), "message": self.to_string() } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            let mut chain = String::new();
            let mut source = std::error::Error::source(&self);
            while let Some(s) = source {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                source = s.source();
            }
            error!(code = self.code(), cause = %chain, "request failed");
        }
        // A 503 gets its Retry-After from the router's middleware, which knows the config.
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Self::Unauthorized(_) = &self {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if let Self::RateLimited { retry_after, .. } = &self {
            // Whole seconds, rounded up: "retry after 0" would invite a busy loop.
            let secs = retry_after.as_millis().div_ceil(1000).max(1);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs as u64),
            );
        }
        response
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e.kind {
            BrokerErrorKind::Unavailable => Self::Unavailable(e),
            BrokerErrorKind::StorageFull | BrokerErrorKind::SubjectFull => Self::StreamFull(e),
            BrokerErrorKind::ConsumerLimit => Self::ConsumerLimit(e.to_string()),
            BrokerErrorKind::NotFound => Self::NotFound(e.to_string()),
            BrokerErrorKind::Conflict => Self::Conflict(e.to_string()),
            BrokerErrorKind::StorageTypeFixed | BrokerErrorKind::Other => {
                Self::Internal(Box::new(e))
            }
        }
    }
}

impl From<DestinationError> for ApiError {
    fn from(e: DestinationError) -> Self {
        match e {
            DestinationError::Invalid(m) => Self::Invalid(m),
            DestinationError::NotFound(_) => Self::NotFound(e.to_string()),
            DestinationError::Exists(_) | DestinationError::Conflict(_) => {
                Self::Conflict(e.to_string())
            }
            DestinationError::ConsumerLimit => Self::ConsumerLimit(e.to_string()),
            DestinationError::Broker(b) => b.into(),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Invalid(m) => Self::Invalid(m),
            IngestError::IdConflict(_) => Self::Conflict(e.to_string()),
            IngestError::TooLarge { .. } => Self::PayloadTooLarge(e.to_string()),
            IngestError::RateLimited {
                message,
                retry_after,
            } => Self::RateLimited {
                message,
                retry_after,
            },
            IngestError::Broker(b) => b.into(),
        }
    }
}

impl From<DlqError> for ApiError {
    fn from(e: DlqError) -> Self {
        match e {
            DlqError::Invalid(m) => Self::Invalid(m),
            DlqError::NotFound(m) => Self::NotFound(m),
            DlqError::DestinationDeleted(m) => Self::DestinationDeleted(m),
            DlqError::DestinationDisabled(m) => Self::DestinationDisabled(m),
            DlqError::Gone(m) => Self::Gone(m),
            DlqError::Conflict(m) => Self::Conflict(m),
            DlqError::Destination(d) => d.into(),
            DlqError::Broker(b) => b.into(),
        }
    }
}

impl From<FilesError> for ApiError {
    fn from(e: FilesError) -> Self {
        match e {
            FilesError::Invalid(m) => Self::Invalid(m),
            FilesError::TooLarge { .. } => Self::PayloadTooLarge(e.to_string()),
            FilesError::Body(_) => Self::Invalid(e.to_string()),
            FilesError::Broker(b) => b.into(),
            other => Self::Internal(Box::new(other)),
        }
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Invalid(m) => Self::Invalid(m),
            SearchError::Destination(d) => d.into(),
            SearchError::Broker(b) => b.into(),
        }
    }
}
