//! The checks a destination passes before it is stored: URL (http(s), SSRF policy),
//! patterns, headers (none of the ones hookstream sets), limits and retry policy.

use super::DestinationError;
use super::ssrf::SsrfPolicy;
use crate::model::{Destination, RetryPolicy};

pub const MAX_EVENT_TYPES: usize = 64;
pub const MAX_HEADERS: usize = 32;

pub fn check(ssrf: &SsrfPolicy, d: &Destination) -> Result<(), DestinationError> {
    let bad = |m: String| Err(DestinationError::Invalid(m));
    let template_free = d.url.replace(['{', '}'], "");
    let url = match url::Url::parse(&template_free) {
        Ok(u) => u,
        Err(e) => return bad(format!("url is not a valid URL: {e}")),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return bad("url must be http or https".into());
    }
    if d.url.contains('{') && d.method != crate::model::HttpMethod::Get {
        return bad("URL templates ({placeholder}) are only for GET destinations".into());
    }
    if let Err(why) = ssrf.check_url(&url) {
        return bad(format!("url refused: {why}"));
    }
    if d.event_types.is_empty() || d.event_types.len() > MAX_EVENT_TYPES {
        return bad(format!(
            "event_types must hold 1 to {MAX_EVENT_TYPES} patterns"
        ));
    }
    if d.headers.len() > MAX_HEADERS {
        return bad(format!("at most {MAX_HEADERS} headers"));
    }
    for (name, value) in &d.headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(value).is_err()
        {
            return bad(format!("header {name:?} is not a valid HTTP header"));
        }
        if crate::model::webhook::RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
            return bad(format!("header {name:?} is set by hookstream"));
        }
    }
    if !(1..=10_000).contains(&d.max_in_flight) {
        return bad("max_in_flight must be 1 to 10000".into());
    }
    if !(100..=300_000).contains(&d.timeout_ms) {
        return bad("timeout_ms must be 100 to 300000".into());
    }
    if let Some(rl) = d.rate_limit
        && (!(rl.per_second > 0.0 && rl.per_second <= 100_000.0) || rl.burst == 0)
    {
        return bad("rate_limit needs per_second in (0, 100000] and burst ≥ 1".into());
    }
    validate_retry(&d.retry).map_err(DestinationError::Invalid)?;
    if d.description.as_ref().is_some_and(|s| s.len() > 1024) {
        return bad("description is at most 1024 bytes".into());
    }
    Ok(())
}

pub fn validate_retry(r: &RetryPolicy) -> Result<(), String> {
    if !(1..=100).contains(&r.max_attempts) {
        return Err("retry.max_attempts must be 1 to 100".into());
    }
    match (&r.schedule_ms, &r.backoff) {
        (Some(_), Some(_)) => Err("retry takes schedule_ms or backoff, not both".into()),
        (None, None) => Err("retry needs schedule_ms or backoff".into()),
        (Some(s), None) => {
            if s.is_empty() && r.max_attempts > 1 {
                return Err("retry.schedule_ms is empty but max_attempts > 1".into());
            }
            if s.iter().any(|d| *d > 7 * 24 * 3_600_000) {
                return Err("retry.schedule_ms delays are at most 7 days".into());
            }
            Ok(())
        }
        (None, Some(b)) => {
            if b.base_ms == 0 || b.max_ms < b.base_ms || b.max_ms > 7 * 24 * 3_600_000 {
                return Err("retry.backoff needs 0 < base_ms ≤ max_ms ≤ 7 days".into());
            }
            if !(1.0..=100.0).contains(&b.factor) || !(0.0..=1.0).contains(&b.jitter) {
                return Err("retry.backoff needs factor in [1, 100] and jitter in [0, 1]".into());
            }
            Ok(())
        }
    }
}
