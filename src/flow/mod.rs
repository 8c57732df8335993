//! Flow control: what may be sent when, per destination and across replicas
//! (docs/adr/0006-flow-control-in-kv.md).
//!
//! - [`gcra`]: the rate-limit arithmetic on one number.
//! - [`rate`]: rate limits shared through KV `hs_ratelimit`, leased in small batches.
//! - [`circuit`]: circuit breakers shared through KV `hs_circuit`; [`circuit_state`] is
//!   the stored entry and what each attempt does to it (which also tells operational
//!   events when to announce a circuit and since when a destination has been failing).
//!
//! Concurrency (`max_in_flight`) is not here: it is the consumer's `max_ack_pending`,
//! which the server enforces for all replicas together. Ordered destinations are the
//! consumer's `max_ack_pending = 1` plus retries in place (`delivery/attempt.rs`).

pub mod circuit;
pub mod circuit_state;
pub mod gcra;
pub mod rate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::broker::{Broker, BrokerError};
use crate::config::FlowConfig;
use crate::model::Destination;
use crate::telemetry::metrics as m;
use circuit::{CircuitPolicy, Circuits, Gate, Settled, Verdict};
use rate::{Limit, SharedRateLimiter};

/// How long to hold a message when the flow state cannot be read (NATS trouble):
/// holding never uses up an attempt, sending could break a limit.
const HOLD_ON_ERROR: Duration = Duration::from_secs(1);

/// What a delivery may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Send,
    /// Not now: give the message back for this long; no attempt is used up.
    Hold(Duration),
}

pub struct Flow {
    pub rate: SharedRateLimiter,
    pub circuits: Arc<Circuits>,
    tenant_default: Option<Limit>,
    tenants: BTreeMap<String, Limit>,
    /// At most one announcement of a destination's circuit per this long (ADR 0013).
    announce_interval: Duration,
}

impl Flow {
    pub fn new(broker: &Broker, cfg: &FlowConfig) -> Self {
        let policy = CircuitPolicy {
            threshold: cfg.circuit_failure_threshold,
            cooldown: cfg.circuit_cooldown,
            probes: cfg.circuit_probes,
        };
        let limit = |l: &crate::config::TenantLimit| {
            (l.per_second > 0.0).then_some(Limit {
                per_second: l.per_second,
                burst: l.burst.max(1),
            })
        };
        Self {
            rate: SharedRateLimiter::new(
                broker.ratelimit.clone(),
                cfg.rate_lease_horizon,
                cfg.rate_lease_max,
            ),
            circuits: Arc::new(Circuits::new(
                broker.circuits.clone(),
                broker.shards.clone(),
                policy,
            )),
            tenant_default: limit(&cfg.tenant_default),
            tenants: cfg
                .tenants
                .iter()
                .map(|(t, l)| (t.clone(), limit(l)))
                .filter_map(|(t, l)| l.map(|l| (t, l)))
                .collect(),
            announce_interval: cfg.circuit_announce_interval,
        }
    }

    /// Before each attempt: the circuit may hold the message; the rate limit makes it
    /// wait for its send time.
    pub async fn admit(&self, destination: &Destination) -> Admission {
        let id = destination.id.as_str();
        match self.circuits.gate(id) {
            Gate::Closed => {}
            Gate::Open(left) => {
                metrics::counter!(m::THROTTLED, "destination" => m::destination_label(id), "reason" => "circuit_open").increment(1);
                // Come back just after the cool-down, when probes may go.
                return Admission::Hold(left + Duration::from_millis(50));
            }
            Gate::HalfOpen => match self.circuits.try_probe(&destination.id).await {
                Ok(true) => {}
                Ok(false) => {
                    metrics::counter!(m::THROTTLED, "destination" => m::destination_label(id), "reason" => "circuit_open").increment(1);
                    return Admission::Hold(self.probe_wait());
                }
                Err(e) => {
                    warn!(destination_id = id, error = %e, "circuit state unreadable; holding");
                    return Admission::Hold(HOLD_ON_ERROR);
                }
            },
        }
        if let Some(limit) = destination.rate_limit {
            let limit = Limit {
                per_second: limit.per_second,
                burst: limit.burst,
            };
            match self.rate.acquire(&rate::destination_key(id), limit).await {
                Ok(waited) if !waited.is_zero() => {
                    metrics::counter!(m::THROTTLED, "destination" => m::destination_label(id), "reason" => "rate_limit").increment(1);
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(destination_id = id, error = %e, "rate limit unreadable; holding");
                    return Admission::Hold(HOLD_ON_ERROR);
                }
            }
        }
        Admission::Send
    }

    /// After each attempt. `announce`: the attempt may claim the announcement of a
    /// circuit change (not when it delivered an operational event).
    pub async fn settle(
        &self,
        destination: &Destination,
        verdict: Verdict,
        announce: bool,
    ) -> Settled {
        let interval = announce.then_some(self.announce_interval);
        match self
            .circuits
            .record(&destination.id, verdict, destination.is_active(), interval)
            .await
        {
            Ok(settled) => settled,
            Err(e) => {
                warn!(destination_id = %destination.id, error = %e, "circuit not updated");
                Settled::default()
            }
        }
    }

    /// The interval between two announcements of one destination's circuit.
    pub fn announce_interval(&self) -> Duration {
        self.announce_interval
    }

    /// While the probes of a half-open circuit are out, the others wait this long.
    fn probe_wait(&self) -> Duration {
        (self.circuits.policy().cooldown / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Ingest: `events` more events of `tenant` now, or how long to wait.
    pub async fn admit_tenant(
        &self,
        tenant: &str,
        events: u32,
    ) -> Result<Result<(), Duration>, BrokerError> {
        let Some(limit) = self.tenants.get(tenant).copied().or(self.tenant_default) else {
            return Ok(Ok(()));
        };
        self.rate
            .try_acquire(&rate::tenant_key(tenant), limit, events)
            .await
    }
}

/// How an attempt's answer bears on the circuit.
pub fn verdict(status: Option<u16>) -> Verdict {
    match status {
        None => Verdict::Unwell,
        Some(s) if s >= 500 || s == 408 || s == 429 => Verdict::Unwell,
        Some(s) if (200..300).contains(&s) => Verdict::Delivered,
        Some(_) => Verdict::Refused,
    }
}
