//! Circuit breakers, one per destination, shared by all replicas through KV `hs_circuit`
//! (docs/adr/0006).
//!
//! Closed: requests go out; each failed attempt that says "the receiver is not well"
//! (no answer, 5xx, 408, 429) adds one to a shared count of consecutive failures, any
//! answer that proves the receiver alive resets it. At `threshold` the circuit opens for
//! `cooldown`: nothing is sent, the destination's consumer is paused until the cool-down
//! ends (the server resumes it by itself), and messages already pulled go back with a nak
//! that records no attempt. After the cool-down the circuit is half-open: up to `probes`
//! requests may go, each granted by compare-and-set; a success closes the circuit, a
//! failure opens it for another cool-down.
//!
//! A healthy destination costs nothing here: there is no entry for it, every replica
//! knows that from its local copy of the bucket (a watch), and a success with no entry
//! writes nothing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::jetstream::stream::Stream;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::{BrokerError, consumers, names};
use crate::model::DestinationId;
pub use crate::model::circuit::{CircuitView, Phase};
use crate::telemetry::metrics as m;

/// Compare-and-set rounds before a transition gives up (it is retried by the next attempt).
const CAS_ROUNDS: usize = 16;

/// Transitions of one destination in one worker run one at a time (a lock per stripe of
/// destinations). Measured (`make bench`, failure mix): 64 attempts of a destination
/// failing at once, each racing the others' compare-and-set, took ~2,000 KV reads and
/// writes per destination and most gave up after `CAS_ROUNDS`; in turn, each finds the
/// revision the previous one wrote in the local copy and writes once.
const TRANSITION_STRIPES: usize = 64;

#[derive(Debug, Clone, Copy)]
pub struct CircuitPolicy {
    pub threshold: u32,
    pub cooldown: Duration,
    pub probes: u32,
}

/// What is stored: closed (with a failure count) or open until a time. Half-open is
/// "open and the cool-down is over".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub open: bool,
    /// Consecutive failed attempts.
    pub failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<DateTime<Utc>>,
    /// End of the cool-down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// Probes granted since the cool-down ended.
    #[serde(default)]
    pub probes: u32,
}

impl Stored {
    fn closed() -> Self {
        Self {
            open: false,
            failures: 0,
            opened_at: None,
            until: None,
            probes: 0,
        }
    }

    pub fn phase(&self, now: DateTime<Utc>) -> Phase {
        match (self.open, self.until) {
            (false, _) => Phase::Closed,
            (true, Some(until)) if now < until => Phase::Open,
            (true, _) => Phase::HalfOpen,
        }
    }
}

/// What the circuit says about sending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Closed,
    /// Do not send for this long.
    Open(Duration),
    /// Send only with a granted probe.
    HalfOpen,
}

/// How an attempt bears on the circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The receiver answered (2xx, or a 4xx about this one request): it is alive.
    Alive,
    /// No answer, 5xx, 408 or 429.
    Unwell,
}

pub struct Circuits {
    kv: kv::Store,
    /// The delivery shards, where destination consumers live (docs/adr/0010).
    shards: Vec<Stream>,
    policy: CircuitPolicy,
    /// Destinations whose circuit is not closed-with-no-failures, with the revision.
    known: RwLock<HashMap<String, (Stored, u64)>>,
    transitions: Vec<tokio::sync::Mutex<()>>,
}

impl Circuits {
    pub fn new(kv: kv::Store, shards: Vec<Stream>, policy: CircuitPolicy) -> Self {
        Self {
            kv,
            shards,
            policy,
            known: RwLock::new(HashMap::new()),
            transitions: (0..TRANSITION_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    pub fn policy(&self) -> CircuitPolicy {
        self.policy
    }

    /// From the local copy; no I/O.
    pub fn gate(&self, destination: &str) -> Gate {
        let known = self.known.read().expect("circuit lock is never poisoned");
        let Some((stored, _)) = known.get(destination) else {
            return Gate::Closed;
        };
        let now = Utc::now();
        match stored.phase(now) {
            Phase::Closed => Gate::Closed,
            Phase::Open => Gate::Open(
                (stored.until.unwrap_or(now) - now)
                    .to_std()
                    .unwrap_or_default(),
            ),
            Phase::HalfOpen => Gate::HalfOpen,
        }
    }

    pub fn view(&self, destination: &str) -> CircuitView {
        let known = self.known.read().expect("circuit lock is never poisoned");
        let stored = known
            .get(destination)
            .map(|(s, _)| s.clone())
            .unwrap_or_else(Stored::closed);
        CircuitView {
            state: stored.phase(Utc::now()),
            failures: stored.failures,
            opened_at: stored.opened_at.filter(|_| stored.open),
            until: stored.until.filter(|_| stored.open),
        }
    }

    /// Asks for one of the half-open circuit's probes. `false`: all are out; wait.
    pub async fn try_probe(&self, destination: &DestinationId) -> Result<bool, BrokerError> {
        let policy = self.policy;
        let written = self
            .transition(destination, |s, now| {
                if s.phase(now) != Phase::HalfOpen {
                    return None;
                }
                // Probes whose result never came (their replica died) are given again
                // after one more cool-down.
                let stuck = s
                    .until
                    .is_some_and(|u| now - u > chrono_of(policy.cooldown));
                let used = if stuck { 0 } else { s.probes };
                (used < policy.probes).then(|| Stored {
                    probes: used + 1,
                    until: if stuck { Some(now) } else { s.until },
                    ..s.clone()
                })
            })
            .await?;
        // Not written: either all probes are out, or the circuit closed meanwhile (another
        // probe succeeded) and the request may go as a normal one.
        Ok(written.is_some() || self.gate(destination.as_str()) == Gate::Closed)
    }

    /// Counts an attempt's result; opens or closes the circuit when it should.
    /// `may_pause`: the destination is active, so its consumer may be paused and resumed
    /// (an operator's pause is never undone here).
    pub async fn record(
        &self,
        destination: &DestinationId,
        verdict: Verdict,
        may_pause: bool,
    ) -> Result<(), BrokerError> {
        let policy = self.policy;
        let name = names::consumer_name(destination);
        let shard = names::shard_of(destination.as_str(), self.shards.len() as u32);
        // A destination without a consumer now has nothing to pause or resume: the
        // dispatcher's gate holds it back, and its next consumer is made paused or not.
        let consumer_stream = &self.shards[shard as usize];
        match verdict {
            Verdict::Alive => {
                let known = {
                    let known = self.known.read().expect("circuit lock is never poisoned");
                    known.contains_key(destination.as_str())
                };
                if !known {
                    return Ok(());
                }
                let written = self
                    .transition(destination, |s, _| {
                        (s.open || s.failures > 0).then(Stored::closed)
                    })
                    .await?;
                if let Some((before, _)) = written
                    && before.open
                {
                    info!(destination_id = %destination, "circuit closed");
                    if may_pause {
                        consumers::set_paused(consumer_stream, &name, false).await?;
                    }
                }
            }
            Verdict::Unwell => {
                let written = self
                    .transition(destination, |s, now| {
                        let failures = s.failures.saturating_add(1);
                        let open_now = match s.phase(now) {
                            Phase::Closed => failures >= policy.threshold,
                            // A probe failed: another cool-down.
                            Phase::HalfOpen => true,
                            // A request that was in flight when it opened: nothing to
                            // change, so nothing written.
                            Phase::Open => return None,
                        };
                        Some(if open_now {
                            Stored {
                                open: true,
                                failures,
                                opened_at: Some(now),
                                until: Some(now + chrono_of(policy.cooldown)),
                                probes: 0,
                            }
                        } else {
                            Stored {
                                failures,
                                ..s.clone()
                            }
                        })
                    })
                    .await?;
                if let Some((before, after)) = written
                    && after.open
                    && after.opened_at != before.opened_at
                {
                    let until = after.until.expect("an open circuit has an end");
                    warn!(destination_id = %destination, failures = after.failures, until = %until, "circuit open");
                    metrics::counter!(m::CIRCUIT_OPENED).increment(1);
                    if may_pause {
                        // The server resumes the consumer by itself when the cool-down ends.
                        consumers::pause_until(consumer_stream, &name, until).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies `change` to the stored state by compare-and-set. `change` answers the new
    /// state, or `None` to leave it. Answers the state before and after a write.
    async fn transition(
        &self,
        destination: &DestinationId,
        change: impl Fn(&Stored, DateTime<Utc>) -> Option<Stored>,
    ) -> Result<Option<(Stored, Stored)>, BrokerError> {
        let key = destination.as_str();
        let stripe = {
            use std::hash::{BuildHasher, BuildHasherDefault};
            let hasher = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
            hasher.hash_one(key) as usize % TRANSITION_STRIPES
        };
        let _turn = self.transitions[stripe].lock().await;
        let mut cached = {
            let known = self.known.read().expect("circuit lock is never poisoned");
            known.get(key).cloned()
        };
        for _ in 0..CAS_ROUNDS {
            let (current, revision) = match cached.take() {
                Some((s, r)) => (s, Some(r)),
                None => self.read(key).await?,
            };
            let Some(next) = change(&current, Utc::now()) else {
                return Ok(None);
            };
            let value = serde_json::to_vec(&next).expect("circuit state serialises");
            let written = match revision {
                Some(r) => self.kv.update(key, value.into(), r).await.map_err(|e| {
                    (
                        e.kind() == UpdateErrorKind::WrongLastRevision,
                        BrokerError::new("changing a circuit", e),
                    )
                }),
                None => self.kv.create(key, value.into()).await.map_err(|e| {
                    (
                        e.kind() == kv::CreateErrorKind::AlreadyExists,
                        BrokerError::new("changing a circuit", e),
                    )
                }),
            };
            match written {
                Ok(revision) => {
                    self.apply(key, next.clone(), revision);
                    return Ok(Some((current, next)));
                }
                Err((true, _)) => continue,
                Err((false, e)) => return Err(e),
            }
        }
        Err(BrokerError::new(
            "changing a circuit",
            format!("circuit of {key} changed {CAS_ROUNDS} times meanwhile"),
        ))
    }

    async fn read(&self, key: &str) -> Result<(Stored, Option<u64>), BrokerError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| BrokerError::new("reading a circuit", e))?;
        Ok(match entry {
            None => (Stored::closed(), None),
            Some(e) if e.operation != Operation::Put => (Stored::closed(), Some(e.revision)),
            Some(e) => (
                serde_json::from_slice(&e.value).unwrap_or_else(|_| Stored::closed()),
                Some(e.revision),
            ),
        })
    }

    /// Takes a state into the local copy (from this replica's write or the watch); older
    /// revisions never replace newer ones.
    fn apply(&self, key: &str, stored: Stored, revision: u64) {
        let mut known = self.known.write().expect("circuit lock is never poisoned");
        if known.get(key).is_some_and(|(_, r)| *r > revision) {
            return;
        }
        let phase = stored.phase(Utc::now());
        let gauge = m::own_destination_label(key)
            .map(|label| metrics::gauge!(m::CIRCUIT_STATE, "destination" => label));
        if stored == Stored::closed() {
            if known.remove(key).is_some()
                && let Some(gauge) = gauge
            {
                gauge.set(0.0);
            }
        } else {
            known.insert(key.to_string(), (stored, revision));
            if let Some(gauge) = gauge {
                gauge.set(phase.gauge());
            }
        }
    }

    /// Keeps the local copy equal to the bucket until cancelled: the history first, then
    /// each change. On a lost watch, opens a new one.
    pub async fn run_watch(self: Arc<Self>, token: CancellationToken) {
        loop {
            let watch = tokio::select! {
                _ = token.cancelled() => return,
                w = self.kv.watch_with_history(">") => w,
            };
            match watch {
                Ok(mut watch) => loop {
                    let next = tokio::select! {
                        _ = token.cancelled() => return,
                        next = watch.next() => next,
                    };
                    match next {
                        Some(Ok(entry)) => {
                            let stored = match entry.operation {
                                Operation::Put => serde_json::from_slice(&entry.value)
                                    .unwrap_or_else(|_| Stored::closed()),
                                _ => Stored::closed(),
                            };
                            self.apply(&entry.key, stored, entry.revision);
                        }
                        Some(Err(e)) => {
                            warn!(error = %e, "circuit watch failed; watching again");
                            break;
                        }
                        None => break,
                    }
                },
                Err(e) => warn!(error = %e, "cannot watch circuits; trying again"),
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Destinations whose circuit is not closed, with their view (for `/v1/stats`).
    pub fn not_closed(&self) -> Vec<(String, CircuitView)> {
        let keys: Vec<String> = {
            let known = self.known.read().expect("circuit lock is never poisoned");
            known.keys().cloned().collect()
        };
        keys.into_iter()
            .map(|k| {
                let v = self.view(&k);
                (k, v)
            })
            .collect()
    }
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_open_is_open_after_the_cool_down() {
        let now = Utc::now();
        let open = Stored {
            open: true,
            failures: 5,
            opened_at: Some(now),
            until: Some(now + chrono::Duration::seconds(30)),
            probes: 0,
        };
        assert_eq!(open.phase(now), Phase::Open);
        assert_eq!(
            open.phase(now + chrono::Duration::seconds(31)),
            Phase::HalfOpen
        );
        assert_eq!(Stored::closed().phase(now), Phase::Closed);
    }
}
