//! The spans of an event's trace, made here only, so that their names and attributes
//! follow one convention (docs/adr/0004-one-trace-per-event.md):
//!
//! ```text
//! POST /v1/events              server    (parent: the request's traceparent)
//! └ publish HS_EVENTS          producer  (its context is the message's traceparent)
//!   └ process HS_EVENTS        consumer  one per message delivery to one destination
//!     ├ POST                   client    one per attempt; its traceparent goes out
//!     └ publish HS_DLQ         producer  when the pair is dead-lettered
//!       └ publish HS_EVENTS    producer  a replay (link: the replay request's span)
//!         └ process HS_EVENTS …
//! ```
//!
//! Every constructor returns `Span::none()` when traces are off: no span, no field
//! formatting, no allocation. Span names are low-cardinality (stream names, HTTP
//! methods); ids are attributes.

use opentelemetry::trace::TraceContextExt;
use tracing::field::Empty;
use tracing::{Span, info_span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::propagation::{self, HttpHeaders};
use super::redact;
use super::traces::enabled;

/// The server span of one API request; its parent is the request's `traceparent`.
pub fn http_server(method: &http::Method, route: &str, headers: &http::HeaderMap) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = info_span!(
        "http request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = route,
        http.response.status_code = Empty,
        error.type = Empty,
    );
    propagation::set_remote_parent(&span, propagation::extract(&HttpHeaders(headers)));
    span
}

/// Server spans: only 5xx is an error (a 4xx is the client's).
pub fn record_http_server_status(span: &Span, status: u16) {
    if span.is_none() {
        return;
    }
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
        span.record("error.type", status);
    }
}

/// Publishing one message on a stream. `message_id` is its `Nats-Msg-Id`.
pub fn publish(
    stream: &'static str,
    subject: &str,
    message_id: &str,
    event_id: Option<&str>,
) -> Span {
    if !enabled() {
        return Span::none();
    }
    info_span!(
        "publish",
        otel.name = %format_args!("publish {stream}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = subject,
        messaging.message.id = message_id,
        hookstream.event.id = event_id,
        error.type = Empty,
    )
}

/// A re-publish (replay, resend) of a stored message: a child of the trace the message
/// carries, linked to the span of the request that asked for it (the current span).
pub fn republish(
    stream: &'static str,
    subject: &str,
    message_id: &str,
    event_id: &str,
    carried: &async_nats::HeaderMap,
    operation: &'static str,
) -> Span {
    if !enabled() {
        return Span::none();
    }
    let requested_by = Span::current().context().span().span_context().clone();
    let span = info_span!(
        "publish",
        otel.name = %format_args!("publish {stream}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = subject,
        messaging.message.id = message_id,
        hookstream.operation = operation,
        hookstream.event.id = event_id,
        error.type = Empty,
    );
    propagation::set_remote_parent(&span, propagation::extract_nats(Some(carried)));
    span.add_link(requested_by);
    span
}

/// Marks a producer (or any) span failed.
pub fn record_error(span: &Span, error_type: &str) {
    if span.is_none() {
        return;
    }
    span.record("otel.status_code", "error");
    span.record("error.type", error_type);
}

/// One delivery of one message to one destination: everything from parsing to the ack.
pub fn process(
    destination_id: &str,
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    delivered: i64,
) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = info_span!(
        "process",
        otel.name = "process HS_EVENTS",
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = subject,
        messaging.consumer.group.name = %crate::broker::names::consumer_name_of(destination_id),
        messaging.message.id = Empty,
        messaging.nats.message.delivery_count = delivered,
        hookstream.event.id = Empty,
        hookstream.destination.id = destination_id,
        hookstream.outcome = Empty,
        hookstream.retry.delay_ms = Empty,
        error.type = Empty,
    );
    propagation::set_remote_parent(&span, propagation::extract_nats(headers));
    span
}

/// The event id, once the message is parsed (it is the `Nats-Msg-Id` of an ingest).
pub fn record_event_id(span: &Span, event_id: &str) {
    if span.is_none() {
        return;
    }
    span.record("hookstream.event.id", event_id);
    span.record("messaging.message.id", event_id);
}

/// How the delivery ended: `delivered`, `retrying` (with the delay), `dead_lettered`.
pub fn record_outcome(span: &Span, outcome: &'static str, retry_in_ms: Option<u64>) {
    if span.is_none() {
        return;
    }
    span.record("hookstream.outcome", outcome);
    if let Some(ms) = retry_in_ms {
        span.record("hookstream.retry.delay_ms", ms);
    }
    if outcome == "dead_lettered" {
        span.record("otel.status_code", "error");
    }
}

/// The client span of one HTTP attempt; [`record_attempt_url`] adds where it goes once
/// the request is built.
pub fn attempt(method: &str, event_id: &str, destination_id: &str, number: u32) -> Span {
    if !enabled() {
        return Span::none();
    }
    info_span!(
        "attempt",
        otel.name = method,
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = method,
        url.full = Empty,
        server.address = Empty,
        server.port = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
        hookstream.event.id = event_id,
        hookstream.destination.id = destination_id,
        hookstream.attempt = number,
    )
}

/// The request's URL without credentials, query or fragment: GET destinations carry event
/// data in the query, and receivers put tokens there (docs/adr/0004).
pub fn record_attempt_url(span: &Span, url: &str) {
    if span.is_none() {
        return;
    }
    if let Ok(parsed) = url::Url::parse(url) {
        if let Some(host) = parsed.host_str() {
            span.record("server.address", host);
        }
        if let Some(port) = parsed.port_or_known_default() {
            span.record("server.port", port);
        }
    }
    span.record("url.full", redact::url(url).as_str());
}

/// The result of an attempt: its status code, or why there was none. Any non-2xx is an
/// error for a webhook (it will be retried or dead-lettered).
pub fn record_attempt_result(span: &Span, status: Option<u16>, error: Option<&str>) {
    if span.is_none() {
        return;
    }
    if let Some(status) = status {
        span.record("http.response.status_code", status);
    }
    let failed = !status.is_some_and(|s| (200..300).contains(&s));
    if failed {
        span.record("otel.status_code", "error");
        match (status, error) {
            (Some(s), _) if !(200..300).contains(&s) => span.record("error.type", s),
            (_, Some(e)) => span.record("error.type", error_type(e)),
            _ => span.record("error.type", "_OTHER"),
        };
    }
}

/// A low-cardinality class of a transport error (the full text is in the attempt record).
fn error_type(error: &str) -> &'static str {
    if error.starts_with("timed out") {
        "timeout"
    } else if error.starts_with("connection failed") {
        "connection_failed"
    } else if error.starts_with("refused by SSRF guard") {
        "ssrf_refused"
    } else if error.starts_with("invalid URL") {
        "invalid_url"
    } else {
        "_OTHER"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_none_when_traces_are_off() {
        assert!(attempt("POST", "evt_1", "dst_1", 1).is_none());
        assert!(process("dst_1", "hs.ev.t.a", None, 1).is_none());
        assert!(publish("HS_EVENTS", "hs.ev.t.a", "evt_1", Some("evt_1")).is_none());
    }
}
