//! Metric names, defined once, and the Prometheus recorder behind `/metrics`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const EVENTS_INGESTED: &str = "hookstream_events_ingested_total";
pub const INGEST_DUPLICATES: &str = "hookstream_ingest_duplicates_total";
pub const DELIVERIES: &str = "hookstream_deliveries_total";
pub const ATTEMPT_DURATION: &str = "hookstream_attempt_duration_seconds";
pub const RETRIES_SCHEDULED: &str = "hookstream_retries_scheduled_total";
pub const DEAD_LETTERED: &str = "hookstream_dead_lettered_total";
/// Dead letters re-published by a replay (duplicates within the window not counted).
pub const DLQ_REPLAYED: &str = "hookstream_dlq_replayed_total";
/// Messages published by `POST /v1/events/{id}/resend`, one per destination.
pub const EVENTS_RESENT: &str = "hookstream_events_resent_total";
pub const PULLS: &str = "hookstream_pulls_total";
pub const CONSUMER_BACKLOG: &str = "hookstream_consumer_backlog";
pub const DESTINATIONS: &str = "hookstream_destinations";
/// Consumers on HS_EVENTS and the stream's limit (`events.max_consumers`).
pub const CONSUMERS: &str = "hookstream_stream_consumers";
pub const CONSUMER_LIMIT: &str = "hookstream_stream_consumer_limit";
pub const HTTP_REQUESTS: &str = "hookstream_http_requests_total";
/// Deliveries held back, by `reason` (`rate_limit`, `circuit_open`); never an attempt.
pub const THROTTLED: &str = "hookstream_throttled_total";
/// Per destination with a circuit entry: 0 closed, 1 open, 2 half-open.
pub const CIRCUIT_STATE: &str = "hookstream_circuit_state";
pub const CIRCUIT_OPENED: &str = "hookstream_circuit_opened_total";
/// Compare-and-set writes to `hs_ratelimit` (compare with deliveries to see the lease).
pub const RATE_LIMIT_KV_WRITES: &str = "hookstream_ratelimit_kv_writes_total";
/// Events refused with 429 by a tenant's ingest limit.
pub const TENANT_RATE_LIMITED: &str = "hookstream_tenant_rate_limited_total";

/// Installs the process-wide recorder once; later calls (tests building several apps in
/// one process) get the same handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(ATTEMPT_DURATION.to_string()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0,
                    ],
                )
                .expect("bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (embedding application): keep a detached
                // one so /metrics still answers.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}
