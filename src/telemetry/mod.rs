//! Logs, traces and metrics. Metric names live in `metrics.rs` only; span names and
//! attributes in `spans.rs` only.
//!
//! - `logs`: the `tracing` subscriber (logs, plus the OpenTelemetry layer when on),
//! - `traces`: the OTLP exporter from the `OTEL_*` variables; off costs nothing,
//! - `spans`: every span of an event's trace, `propagation`: W3C trace context in headers,
//! - `metrics`: names, the Prometheus recorder, the bounded `destination` label,
//! - `redact`: URLs without credentials, for logs and spans.

pub mod logs;
pub mod metrics;
pub mod propagation;
pub mod redact;
pub mod spans;
pub mod throughput;
pub mod traces;
