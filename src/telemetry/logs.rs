//! The process's `tracing` subscriber: logs (pretty or JSON by config, level by
//! `RUST_LOG`, default info) and, when the `OTEL_*` variables ask for it, the
//! OpenTelemetry layer that turns hookstream's spans into exported spans.
//!
//! Each layer has its own filter: `RUST_LOG=warn` quiets the logs without losing spans,
//! and `RUST_LOG=trace` shows library internals in the logs without exporting them.

use tracing::Level;
use tracing_subscriber::filter::{FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::traces::{TraceSetupError, Traces};
use crate::config::LogFormat;

/// What must be flushed before the process exits.
pub struct Telemetry {
    traces: Option<Traces>,
}

impl Telemetry {
    /// Exports the spans still queued (the batch exporter holds up to
    /// `OTEL_BSP_SCHEDULE_DELAY` worth of them).
    pub async fn shutdown(self) {
        if let Some(traces) = self.traces {
            traces.shutdown().await;
        }
    }
}

/// Library log targets that print whole NATS messages at trace level, destination configs
/// (signing secrets, header values) included: capped whatever `RUST_LOG` asks, since
/// secrets are never logged at any level.
const SECRET_DUMPING_TARGETS: [(&str, Level); 1] = [("async_nats::connection", Level::DEBUG)];

/// Installs the subscriber. Must run inside the Tokio runtime (the gRPC exporter's
/// channel lives on it).
pub fn init(format: LogFormat) -> Result<Telemetry, TraceSetupError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let cap = Targets::new()
        .with_default(Level::TRACE)
        .with_targets(SECRET_DUMPING_TARGETS);
    let fmt = tracing_subscriber::fmt::layer();
    let logs = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Pretty => fmt.boxed(),
    }
    .with_filter(filter.and(cap));
    let traces = Traces::from_env()?;
    let otel = traces.as_ref().map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t.tracer())
            // Source locations, thread names and busy/idle times would add attributes
            // to every span and cost time on every poll; the conventions do not ask
            // for them.
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            // hookstream's own spans (telemetry/spans.rs) and its info+ logs as span
            // events; no library internals.
            .with_filter(Targets::new().with_target("hookstream", Level::INFO))
    });
    // try_init: a second call (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init();
    if let Some(t) = &traces {
        tracing::info!(protocol = t.protocol, "OpenTelemetry traces on");
    }
    Ok(Telemetry { traces })
}
