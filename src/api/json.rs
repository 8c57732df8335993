//! The API's own JSON extractor: a wrong content type, an oversized body, broken JSON and
//! JSON of the wrong shape all answer in the API's error format.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "expected content-type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(
                    "request body is larger than the limit (api.body_limit_bytes)".into(),
                )
            } else {
                ApiError::Invalid(format!(
                    "could not read the request body: {}",
                    rejection.body_text()
                ))
            }
        })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Parses JSON, telling broken JSON (`invalid_json`) from JSON of the wrong shape
/// (`invalid_request`: unknown field, wrong type, bad pattern).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::Invalid(e.to_string()),
        _ => ApiError::InvalidJson(format!("invalid JSON: {e}")),
    })
}
