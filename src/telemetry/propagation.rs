//! W3C trace context (`traceparent`, `tracestate`) in and out of HTTP and NATS headers.
//!
//! Only the W3C format is spoken, with the SDK's propagator used directly rather than
//! through a global: nothing else in the process can change how hookstream propagates.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::broker::names::headers as h;

/// Reads trace context from axum's / reqwest's (`http`) headers.
pub struct HttpHeaders<'a>(pub &'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Reads trace context from a NATS message's headers.
pub struct NatsHeaders<'a>(pub &'a async_nats::HeaderMap);

impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// The remote parent these headers name; an empty context when they name none (or
/// carry a malformed `traceparent`).
pub fn extract(headers: &dyn Extractor) -> Context {
    TraceContextPropagator::new().extract(headers)
}

/// The remote parent a NATS message names, if any.
pub fn extract_nats(headers: Option<&async_nats::HeaderMap>) -> Context {
    match headers {
        Some(headers) => extract(&NatsHeaders(headers)),
        None => Context::new(),
    }
}

/// Sets `span`'s parent to the context these headers carry, if they carry one.
pub fn set_remote_parent(span: &Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        // Fails only when the span is disabled or already started: then there is no
        // OpenTelemetry span to re-parent, which is fine.
        let _ = span.set_parent(parent);
    }
}

/// Puts `span`'s context into `headers` as `traceparent` / `tracestate`. Returns false
/// (and leaves the headers as they were) when the span has no OpenTelemetry context:
/// traces are off, so whatever context the message already carries travels on as is.
pub fn inject_nats(span: &Span, headers: &mut async_nats::HeaderMap) -> bool {
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    if !sc.is_valid() {
        return false;
    }
    headers.insert(h::TRACEPARENT, format_traceparent(sc).as_str());
    // Written only when there is one: an empty header would be noise on every message.
    let state = sc.trace_state().header();
    if !state.is_empty() {
        headers.insert(h::TRACESTATE, state.as_str());
    }
    true
}

fn format_traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// `span`'s context as a `traceparent` value, if it has one.
pub fn traceparent_of(span: &Span) -> Option<String> {
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    sc.is_valid().then(|| format_traceparent(sc))
}

/// The `traceparent` of a NATS message, as it came.
pub fn nats_traceparent(headers: Option<&async_nats::HeaderMap>) -> Option<&str> {
    headers
        .and_then(|h| h.get(h::TRACEPARENT))
        .map(|v| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_the_remote_parent() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let cx = extract_nats(Some(&headers));
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn a_malformed_traceparent_names_no_parent() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("traceparent", "00-nothex-00f067aa0ba902b7-01");
        assert!(
            !extract_nats(Some(&headers))
                .span()
                .span_context()
                .is_valid()
        );
        assert!(!extract_nats(None).span().span_context().is_valid());
    }

    #[test]
    fn without_a_layer_nothing_is_injected() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("traceparent", "as-it-came");
        assert!(!inject_nats(&Span::none(), &mut headers));
        assert_eq!(nats_traceparent(Some(&headers)), Some("as-it-came"));
        assert_eq!(traceparent_of(&Span::none()), None);
    }
}
