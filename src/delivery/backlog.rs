//! The shard scan (docs/adr/0010): one `STREAM.INFO` with `subjects_filter` per delivery
//! shard answers which destinations have deliveries waiting and how many (nats-server
//! keeps that count per subject in memory). A worker scans at start (work left by a
//! replica that stopped) and every `delivery.sweep_interval_ms` (deliveries whose ack wait
//! expired on a replica that died, doorbells missed while reconnecting), and wakes those
//! destinations. It costs one request per shard, whatever the number of destinations,
//! and one more for the gauge of the lookup records nats-server holds in memory.

use std::collections::HashMap;
use std::sync::Arc;

use futures::TryStreamExt;
use tracing::{debug, warn};

use super::dispatcher::Dispatcher;
use crate::broker::{Broker, BrokerError};
use crate::destinations::Registry;
use crate::telemetry::metrics as m;

#[derive(Debug, Default, Clone, Copy)]
pub struct ScanReport {
    /// Destinations with deliveries waiting.
    pub with_backlog: usize,
    /// Deliveries waiting, all shards.
    pub deliveries: u64,
    /// Destinations woken (active ones with a backlog).
    pub woken: usize,
    /// Live destination consumers, all shards.
    pub consumers: usize,
}

pub struct Scanner {
    pub broker: Broker,
    pub registry: Arc<Registry>,
    pub dispatcher: Arc<Dispatcher>,
    pub max_consumers: i32,
}

impl Scanner {
    pub async fn scan(&self) -> Result<ScanReport, BrokerError> {
        let mut report = ScanReport::default();
        let mut backlog: HashMap<String, u64> = HashMap::new();
        for (k, shard) in self.broker.shards.iter().enumerate() {
            let filter = self.broker.subjects.delivery_shard_wildcard(k as u32);
            let mut subjects = shard
                .info_with_subjects(filter)
                .await
                .map_err(|e| BrokerError::new("reading a delivery shard's subjects", e))?;
            let consumers = subjects.info.state.consumer_count;
            report.consumers += consumers;
            if consumers as f64 >= 0.8 * f64::from(self.max_consumers) {
                warn!(
                    shard = k,
                    consumers,
                    limit = self.max_consumers,
                    "a delivery shard is near its consumer limit; raise events.max_consumers"
                );
            }
            while let Some((subject, count)) = subjects
                .try_next()
                .await
                .map_err(|e| BrokerError::new("reading a delivery shard's subjects", e))?
            {
                if let Some(id) = self.broker.subjects.parse_delivery_subject(&subject) {
                    backlog.insert(id.to_string(), count as u64);
                }
            }
        }
        report.with_backlog = backlog.len();
        for (id, count) in &backlog {
            report.deliveries += count;
            match self.registry.get(id) {
                Some(d) if d.is_active() => {
                    self.dispatcher.signal_with_hint(id, *count as usize);
                    report.woken += 1;
                }
                Some(_) => {}
                // Deleted (its deliveries are discarded with it) or not loaded yet.
                None => {
                    debug!(destination_id = %id, count, "deliveries for an unknown destination")
                }
            }
        }
        // Read here, once per scan, and cached in the gauges: a scrape costs NATS nothing.
        let mut other: Option<u64> = None;
        for d in self.registry.all() {
            let n = backlog.get(d.id.as_str()).copied().unwrap_or(0);
            match m::own_destination_label(d.id.as_str()) {
                Some(label) => {
                    metrics::gauge!(m::CONSUMER_BACKLOG, "destination" => label).set(n as f64)
                }
                None => other = Some(other.unwrap_or(0) + n),
            }
        }
        if let Some(n) = other {
            metrics::gauge!(m::CONSUMER_BACKLOG, "destination" => m::OTHER_DESTINATIONS)
                .set(n as f64);
        }
        metrics::gauge!(m::DESTINATIONS).set(self.registry.len() as f64);
        metrics::gauge!(m::CONSUMERS).set(report.consumers as f64);
        metrics::gauge!(m::CONSUMER_LIMIT).set(f64::from(self.max_consumers));
        self.count_lookup_records().await;
        Ok(report)
    }

    /// Sets the gauge of `hs_idempotency`'s records: the figure that sizes nats-server's
    /// memory (one key each). A failed read keeps the last figure and does not fail the
    /// scan, whose job is waking destinations.
    async fn count_lookup_records(&self) {
        // A fresh STREAM.INFO: the store's own status() answers from the cached info.
        match self.broker.idempotency.stream.get_info().await {
            Ok(info) => metrics::gauge!(m::IDEMPOTENCY_RECORDS).set(info.state.messages as f64),
            Err(e) => debug!(error = %e, "reading hs_idempotency's record count"),
        }
    }
}
