//! The periodic low-rate check: one paged listing of all destination consumers (a request
//! per 256). It wakes destinations with pending or unacknowledged messages (redeliveries
//! after another replica died, events missed while the signal was reconnecting), repairs
//! consumers that differ from their destination, creates missing ones, and removes
//! consumers whose destination is gone.

use std::collections::HashSet;
use std::sync::Arc;

use tracing::{info, warn};

use super::dispatcher::Dispatcher;
use super::registry::Registry;
use crate::broker::consumers::{self, spec_of};
use crate::broker::{Broker, BrokerError, names};
use crate::destinations::DestinationStore;
use crate::telemetry::metrics as m;

/// A consumer without a destination is left alone this long: the API creates the
/// consumer a moment before it stores the destination.
const ORPHAN_GRACE: time::Duration = time::Duration::seconds(120);

pub struct Sweeper {
    pub broker: Broker,
    pub registry: Arc<Registry>,
    pub dispatcher: Arc<Dispatcher>,
    pub store: DestinationStore,
    pub ack_wait_margin: std::time::Duration,
    pub max_consumers: i32,
    /// Wake destinations with a backlog (off in the `per_destination` pull mode, where
    /// every destination has its own parked pull).
    pub wake: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SweepReport {
    pub consumers: usize,
    pub woken: usize,
    pub repaired: usize,
    pub created: usize,
    pub removed: usize,
}

impl Sweeper {
    pub async fn sweep(&self) -> Result<SweepReport, BrokerError> {
        let states = consumers::list(&self.broker.events).await?;
        let mut report = SweepReport {
            consumers: states.len(),
            ..Default::default()
        };
        let mut seen = HashSet::with_capacity(states.len());
        // Destinations beyond the label limit are summed under destination="_other".
        let mut other_backlog: Option<u64> = None;
        let now = time::OffsetDateTime::now_utc();
        for state in states {
            let Some(id) = names::destination_of_consumer(&state.name) else {
                continue;
            };
            let Some(destination) = self.registry.get(id) else {
                if now - state.created > ORPHAN_GRACE {
                    info!(consumer = %state.name, "removing consumer of a deleted destination");
                    if consumers::delete(&self.broker.events, &state.name)
                        .await
                        .is_ok()
                    {
                        report.removed += 1;
                    }
                }
                continue;
            };
            seen.insert(id.to_string());
            let backlog = state.num_pending + state.num_ack_pending as u64;
            // Read here, once per sweep, and cached in the gauge: a scrape costs NATS nothing.
            match m::own_destination_label(id) {
                Some(label) => {
                    metrics::gauge!(m::CONSUMER_BACKLOG, "destination" => label).set(backlog as f64)
                }
                None => other_backlog = Some(other_backlog.unwrap_or(0) + backlog),
            }
            let want = consumers::desired_config(
                &destination,
                &self.broker.subjects,
                self.ack_wait_margin,
            );
            if state.spec.as_deref() != spec_of(&want) {
                match self.store.sync_consumer(&destination).await {
                    Ok(()) => report.repaired += 1,
                    Err(e) => warn!(destination_id = %id, error = %e, "consumer not repaired"),
                }
            }
            if self.wake && destination.is_active() && backlog > 0 {
                self.dispatcher.signal_with_hint(id, backlog as usize);
                report.woken += 1;
            }
        }
        for destination in self.registry.all() {
            if !seen.contains(destination.id.as_str()) {
                warn!(destination_id = %destination.id, "destination had no consumer; creating it");
                match self.store.sync_consumer(&destination).await {
                    Ok(()) => report.created += 1,
                    Err(e) => {
                        warn!(destination_id = %destination.id, error = %e, "consumer not created")
                    }
                }
            }
        }
        if let Some(backlog) = other_backlog {
            metrics::gauge!(m::CONSUMER_BACKLOG, "destination" => m::OTHER_DESTINATIONS)
                .set(backlog as f64);
        }
        metrics::gauge!(m::DESTINATIONS).set(self.registry.len() as f64);
        metrics::gauge!(m::CONSUMERS).set(report.consumers as f64);
        metrics::gauge!(m::CONSUMER_LIMIT).set(f64::from(self.max_consumers));
        if report.consumers as f64 >= 0.8 * f64::from(self.max_consumers) {
            warn!(
                consumers = report.consumers,
                limit = self.max_consumers,
                "HS_EVENTS is near its consumer limit; raise events.max_consumers before destinations are refused"
            );
        }
        Ok(report)
    }
}
