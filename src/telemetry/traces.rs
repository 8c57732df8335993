//! OpenTelemetry traces, configured only by the standard `OTEL_*` variables.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set: then there is no exporter, no OpenTelemetry layer and no span is created
//! (`spans.rs` checks [`enabled`] first), so the hot path pays one atomic load.
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off even with an
//! endpoint. The SDK and the exporter read the rest themselves: `OTEL_SERVICE_NAME`
//! (default here: `hookstream`), `OTEL_TRACES_SAMPLER` and `_ARG`, `OTEL_BSP_*`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// Whether spans are made at all. Process-wide because the `tracing` subscriber it
/// mirrors is process-wide too; set once, by [`Traces::from_env`].
static ENABLED: AtomicBool = AtomicBool::new(false);

/// True when OpenTelemetry traces are on in this process.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum TraceSetupError {
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL={0:?} is not supported; use \"grpc\" or \"http/protobuf\""
    )]
    Protocol(String),
    #[error("the OTLP exporter could not be built: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The tracer provider with its batch exporter; flushed by [`Traces::shutdown`].
pub struct Traces {
    provider: SdkTracerProvider,
    pub protocol: &'static str,
}

impl Traces {
    /// `None` when the environment does not ask for traces. Must run inside the Tokio
    /// runtime: the gRPC exporter's channel lives on it.
    pub fn from_env() -> Result<Option<Self>, TraceSetupError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let truthy = |name: &str| var(name).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let exporter_none =
            var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        if endpoint.is_none() || exporter_none || truthy("OTEL_SDK_DISABLED") {
            return Ok(None);
        }
        let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            // The specification's default.
            .unwrap_or_else(|| "http/protobuf".to_string());
        let (exporter, protocol) = match protocol.trim() {
            "grpc" => (SpanExporter::builder().with_tonic().build()?, "grpc"),
            "http/protobuf" => (
                SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .build()?,
                "http/protobuf",
            ),
            other => return Err(TraceSetupError::Protocol(other.to_string())),
        };
        let service = var("OTEL_SERVICE_NAME").unwrap_or_else(|| "hookstream".to_string());
        let resource = Resource::builder()
            .with_service_name(service)
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        // Sampler and batch settings come from OTEL_TRACES_SAMPLER / OTEL_BSP_* (SDK).
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some(Self { provider, protocol }))
    }

    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("hookstream")
    }

    /// Exports what is still queued, then stops the exporter. The SDK blocks the calling
    /// thread while the exporter (on the runtime, for gRPC) sends: run it off the runtime's
    /// workers, bounded so a dead collector cannot hold the exit.
    pub async fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        let provider = self.provider;
        let flushed = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(Duration::from_secs(5))
        });
        match tokio::time::timeout(Duration::from_secs(6), flushed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "trace export at shutdown failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "trace export at shutdown panicked"),
            Err(_) => tracing::warn!("trace export at shutdown timed out"),
        }
    }
}
