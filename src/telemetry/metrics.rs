//! Metric names, defined once, the Prometheus recorder behind `/metrics`, and the
//! `destination` label, whose cardinality is bounded (docs/adr/0005-metric-labels.md).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use metrics::SharedString;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const EVENTS_INGESTED: &str = "hookstream_events_ingested_total";
pub const INGEST_DUPLICATES: &str = "hookstream_ingest_duplicates_total";
/// Lookup records (`hs_idempotency`) of accepted events that could not be stored: the
/// event is stored and delivered, but `GET /v1/events/{id}` does not find it.
pub const IDEMPOTENCY_RECORDS_FAILED: &str = "hookstream_idempotency_records_failed_total";
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
/// Lookup records held in `hs_idempotency`, one per event accepted within
/// `idempotency.ttl_secs`, read once per shard scan (the same figure on every worker).
/// nats-server keeps each key in memory, 0.2–0.4 KiB apiece (docs/PERFORMANCE.md).
pub const IDEMPOTENCY_RECORDS: &str = "hookstream_idempotency_records";
pub const HTTP_REQUESTS: &str = "hookstream_http_requests_total";
/// Deliveries held back by a destination's rate limit or open circuit (no attempt used).
/// Labels: `destination` (see [`destination_label`]), `reason` (`rate_limit`, `circuit_open`).
pub const THROTTLED: &str = "hookstream_throttled_total";
/// A destination's circuit: 0 closed, 1 half-open, 2 open. Label: `destination`, set only
/// for destinations with their own label ([`own_destination_label`]).
pub const CIRCUIT_STATE: &str = "hookstream_circuit_state";
pub const CIRCUIT_OPENED: &str = "hookstream_circuit_opened_total";
/// Compare-and-set writes to `hs_ratelimit` (compare with deliveries to see the lease).
pub const RATE_LIMIT_KV_WRITES: &str = "hookstream_ratelimit_kv_writes_total";
/// Events refused with 429 by a tenant's ingest limit.
pub const TENANT_RATE_LIMITED: &str = "hookstream_tenant_rate_limited_total";
/// Lines of files (uploads, the watched folder) by `outcome`: `accepted`, `rejected`,
/// `duplicate` (already stored by an owner that died before its checkpoint).
pub const FILE_LINES: &str = "hookstream_file_lines_total";
/// Files by `status`: `queued` (stored or taken), `done`, `failed`, `duplicate` (content
/// already ingested, not ingested again).
pub const FILES: &str = "hookstream_files_total";

// Routing (docs/adr/0010).
/// Events the router has routed (acked on `HS_EVENTS`), and the deliveries it wrote.
pub const EVENTS_ROUTED: &str = "hookstream_events_routed_total";
pub const DELIVERIES_ROUTED: &str = "hookstream_deliveries_routed_total";
/// Deliveries the router dead-lettered because their destination was at
/// `events.delivery_max_per_destination` deliveries waiting (reason `backlog_full`).
pub const DELIVERIES_REFUSED_BACKLOG_FULL: &str = "hookstream_deliveries_backlog_full_total";
/// Destination consumers a worker created on their shard (they come and go with work).
pub const CONSUMERS_CREATED: &str = "hookstream_consumers_created_total";

// Operational events (docs/adr/0013).
/// Operational events by `type` and `outcome` (`published`, `failed`).
pub const OPERATIONAL_EVENTS: &str = "hookstream_operational_events_total";

/// The `destination` label value shared by destinations beyond the limit.
pub const OTHER_DESTINATIONS: &str = "_other";

/// Which destinations get their own `destination` label value: the first `limit` seen
/// since the process started; the others share [`OTHER_DESTINATIONS`]. A bound on the
/// number of series per metric whatever the number of destinations.
struct DestinationLabels {
    limit: usize,
    admitted: Mutex<HashSet<Arc<str>>>,
}

/// Process-wide like the recorder it shapes the labels of; set once by [`install`].
static DESTINATION_LABELS: OnceLock<DestinationLabels> = OnceLock::new();

/// The `destination` label value for counters: the id, or [`OTHER_DESTINATIONS`].
pub fn destination_label(id: &str) -> SharedString {
    own_destination_label(id).unwrap_or(SharedString::const_str(OTHER_DESTINATIONS))
}

/// The id as a label value if this destination has its own series; `None` if it is
/// beyond the limit (gauges then sum such destinations under `_other`, or skip them).
pub fn own_destination_label(id: &str) -> Option<SharedString> {
    DESTINATION_LABELS
        .get_or_init(|| DestinationLabels::new(DEFAULT_DESTINATION_LABEL_LIMIT))
        .own(id)
}

impl DestinationLabels {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            admitted: Mutex::default(),
        }
    }

    fn own(&self, id: &str) -> Option<SharedString> {
        if self.limit == 0 {
            return None;
        }
        let mut admitted = self
            .admitted
            .lock()
            .expect("label set lock is never poisoned");
        if let Some(known) = admitted.get(id) {
            return Some(SharedString::from(known.clone()));
        }
        if admitted.len() >= self.limit {
            return None;
        }
        let id: Arc<str> = Arc::from(id);
        admitted.insert(id.clone());
        Some(SharedString::from(id))
    }
}

const DEFAULT_DESTINATION_LABEL_LIMIT: usize = 1000;

/// Installs the process-wide recorder once; later calls (tests building several apps in
/// one process) get the same handle. `per_destination_limit` destinations get their own
/// `destination` label (0: none does); the first call decides.
pub fn install(per_destination_limit: usize) -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    let _ = DESTINATION_LABELS.set(DestinationLabels::new(per_destination_limit));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_beyond_the_limit_share_one_label() {
        let labels = DestinationLabels::new(2);
        assert_eq!(labels.own("dst_a").as_deref(), Some("dst_a"));
        assert_eq!(labels.own("dst_b").as_deref(), Some("dst_b"));
        assert_eq!(labels.own("dst_c"), None);
        // Admitted ones keep their label.
        assert_eq!(labels.own("dst_a").as_deref(), Some("dst_a"));
        assert_eq!(DestinationLabels::new(0).own("dst_a"), None);
    }
}
