//! Delivery counters per destination, summed across replicas in the `HS_STATS` counter
//! stream. Each worker adds up locally and flushes the increments every second, so the
//! cost is one small publish per active destination per second, not one per delivery.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use utoipa::ToSchema;

use crate::broker::Broker;
use crate::broker::names::headers as h;
use crate::flow::Flow;
use crate::model::Destination;
use crate::model::circuit::CircuitView;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Delivered,
    Failed,
    DeadLettered,
}

impl Counter {
    pub const ALL: [Counter; 3] = [Counter::Delivered, Counter::Failed, Counter::DeadLettered];

    pub fn as_str(self) -> &'static str {
        match self {
            Counter::Delivered => "delivered",
            Counter::Failed => "failed",
            Counter::DeadLettered => "dead_lettered",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Default)]
pub struct StatsCounters {
    pending: Mutex<HashMap<String, [u64; 3]>>,
}

impl StatsCounters {
    pub fn add(&self, destination: &str, counter: Counter) {
        let mut pending = self.pending.lock().expect("stats lock is never poisoned");
        match pending.get_mut(destination) {
            Some(c) => c[counter.index()] += 1,
            None => {
                let mut c = [0; 3];
                c[counter.index()] = 1;
                pending.insert(destination.to_string(), c);
            }
        }
    }

    fn take(&self) -> HashMap<String, [u64; 3]> {
        std::mem::take(&mut *self.pending.lock().expect("stats lock is never poisoned"))
    }

    fn put_back(&self, destination: String, counts: [u64; 3]) {
        let mut pending = self.pending.lock().expect("stats lock is never poisoned");
        let entry = pending.entry(destination).or_default();
        for i in 0..3 {
            entry[i] += counts[i];
        }
    }

    /// Publishes the increments gathered so far; what fails is kept for the next round.
    pub async fn flush(&self, broker: &Broker) {
        for (destination, counts) in self.take() {
            let mut failed = [0u64; 3];
            for counter in Counter::ALL {
                let n = counts[counter.index()];
                if n == 0 {
                    continue;
                }
                let mut headers = HeaderMap::new();
                headers.insert(h::INCR, n.to_string().as_str());
                let subject = broker.subjects.stat(&destination, counter.as_str());
                let sent = async {
                    broker
                        .js
                        .publish_with_headers(subject, headers, bytes::Bytes::new())
                        .await?
                        .await?;
                    Ok::<_, async_nats::Error>(())
                }
                .await;
                if let Err(e) = sent {
                    warn!(destination_id = %destination, error = %e, "stats flush failed; kept for later");
                    failed[counter.index()] = n;
                }
            }
            if failed.iter().any(|n| *n > 0) {
                self.put_back(destination, failed);
            }
        }
    }

    pub async fn run_flusher(&self, broker: Broker, every: Duration, token: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush(&broker).await,
                _ = token.cancelled() => {
                    self.flush(&broker).await;
                    return;
                }
            }
        }
    }
}

/// Reads a destination's totals: `(delivered, failed, dead_lettered)`.
pub async fn read_totals(broker: &Broker, destination: &str) -> [u64; 3] {
    let mut out = [0; 3];
    for counter in Counter::ALL {
        let subject = broker.subjects.stat(destination, counter.as_str());
        if let Ok(msg) = broker.stats.direct_get_last_for_subject(subject).await {
            out[counter.index()] = counter_value(&msg.payload);
        }
    }
    out
}

/// One destination's delivery figures (`GET /v1/stats`): its counters summed across
/// replicas, its backlog, and where its flow controls stand.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationStats {
    pub destination_id: String,
    pub tenant: String,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    /// Handed out and not finished: in flight, or waiting for the next attempt.
    pub retrying: u64,
    /// Events not yet handed out to a worker.
    pub pending: u64,
    /// `pending + retrying`.
    pub backlog: u64,
    pub enabled: bool,
    pub paused: bool,
    pub circuit: CircuitView,
}

/// The figures of each destination, in the given order (16 read at once).
pub async fn of_destinations(
    broker: &Broker,
    flow: &Flow,
    destinations: Vec<Destination>,
) -> Vec<DestinationStats> {
    futures::stream::iter(destinations)
        .map(|d| async move {
            let [delivered, failed, dead] = read_totals(broker, d.id.as_str()).await;
            let (pending, retrying) = broker.destination_backlog(d.id.as_str()).await;
            DestinationStats {
                destination_id: d.id.to_string(),
                tenant: d.tenant.to_string(),
                delivered,
                failed_attempts: failed,
                dead_lettered: dead,
                retrying,
                pending,
                backlog: pending + retrying,
                enabled: d.enabled,
                paused: d.paused,
                circuit: flow.circuits.view(d.id.as_str()),
            }
        })
        .buffered(16)
        .collect()
        .await
}

/// A counter message's body is `{"val":"<total>"}`.
fn counter_value(payload: &[u8]) -> u64 {
    #[derive(serde::Deserialize)]
    struct Value {
        val: String,
    }
    serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| v.val.parse().ok())
        .unwrap_or(0)
}
