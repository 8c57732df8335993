//! The signed HTTP request of one attempt: method, URL (a `GET` template filled from the
//! event's data), body (the envelope, or only `data`), the Standard Webhooks signature
//! and the headers hookstream sets (`model::webhook`), after the destination's own.

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http::Method;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::sender;
use super::signer;
use super::template;
use crate::model::webhook as wh;
use crate::model::{BodyMode, Destination, Envelope, HttpMethod};

pub fn method_name(method: HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "GET",
        HttpMethod::Put => "PUT",
        HttpMethod::Post => "POST",
    }
}

/// The signed request of attempt `number` of `envelope` (whose JSON is `body`).
pub fn build(
    destination: &Destination,
    envelope: &Envelope,
    body: &Bytes,
    number: u32,
    timestamp: i64,
    traceparent: Option<&str>,
) -> Result<sender::Request, String> {
    let id = envelope.id.as_str();
    let (method, url, body) = match destination.method {
        HttpMethod::Get => {
            let data: serde_json::Value = serde_json::from_str(envelope.data.get())
                .map_err(|e| format!("data is not JSON: {e}"))?;
            let url = template::fill(&destination.url, &data);
            let url = url::Url::parse(&url).map_err(|e| format!("invalid URL: {e}"))?;
            (Method::GET, url, None)
        }
        m => {
            let body = match destination.body {
                BodyMode::Envelope => body.clone(),
                BodyMode::Data => Bytes::copy_from_slice(envelope.data.get().as_bytes()),
            };
            let method = if m == HttpMethod::Put {
                Method::PUT
            } else {
                Method::POST
            };
            let url = destination
                .parsed_url()
                .map_err(|e| format!("invalid URL: {e}"))?
                .clone();
            (method, url, Some(body))
        }
    };
    let now = Utc::now();
    let keys = destination
        .secrets
        .iter()
        .filter(|s| s.is_active(now))
        .map(|s| &s.key);
    let signature = signer::signature_header(keys, id, timestamp, body.as_deref().unwrap_or(b""));

    let mut headers = HeaderMap::with_capacity(destination.headers.len() + 8);
    for (name, value) in &destination.headers {
        // Validated when the destination was saved.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    let value = |s: &str| HeaderValue::from_str(s).map_err(|e| format!("bad header value: {e}"));
    if body.is_some() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    headers.insert(wh::ID, value(id)?);
    headers.insert(wh::TIMESTAMP, value(&timestamp.to_string())?);
    headers.insert(wh::SIGNATURE, value(&signature)?);
    headers.insert(wh::EVENT_TYPE, value(envelope.event_type.as_str())?);
    headers.insert(wh::ATTEMPT, value(&number.to_string())?);
    if let Some(tp) = traceparent.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert(wh::TRACEPARENT, tp);
    }
    Ok(sender::Request {
        method,
        url,
        headers,
        body,
        timeout: Duration::from_millis(destination.timeout_ms),
    })
}
