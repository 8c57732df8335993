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
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::circuit_state::chrono_of;
pub use super::circuit_state::{CircuitPolicy, Claim, Stored, Verdict};
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

/// What the circuit says about sending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Closed,
    /// Do not send for this long.
    Open(Duration),
    /// Send only with a granted probe.
    HalfOpen,
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
    /// (an operator's pause is never undone here). `announce`: the interval between two
    /// announcements of this circuit, when this attempt may claim one (it may not when it
    /// delivered an operational event: an operational event never causes another).
    pub async fn record(
        &self,
        destination: &DestinationId,
        verdict: Verdict,
        may_pause: bool,
        announce: Option<Duration>,
    ) -> Result<Settled, BrokerError> {
        if verdict == Verdict::Delivered && !self.is_known(destination.as_str()) {
            // Healthy: no entry, nothing to write, nothing to read.
            return Ok(Settled::default());
        }
        let policy = self.policy;
        let written = self
            .transition(destination, |s, now| {
                let mut next = s.after(verdict, now, &policy)?;
                if let Some(interval) = announce {
                    next.claim(now, interval);
                }
                Some(next)
            })
            .await?;
        let mut settled = Settled::default();
        if let Some((before, after)) = &written {
            self.act_on(destination, before, after, may_pause).await?;
            if after.announced != before.announced {
                settled.news = Some(CircuitNews::of(after));
            }
        }
        let now = Utc::now();
        let known = self.known.read().expect("circuit lock is never poisoned");
        if let Some((current, _)) = known.get(destination.as_str()) {
            settled.failing_since = current.failing_since;
            if let (Some(interval), None) = (announce, &settled.news)
                && let Claim::Deferred(due) = current.claim_state(now, interval)
            {
                settled.deferred = Some(Deferral {
                    open: current.open,
                    failures: current.failures,
                    due,
                });
            }
        }
        Ok(settled)
    }

    /// The announcement of the circuit's current state put off by [`Circuits::record`],
    /// now that it may be due: claimed if the circuit is still `open` (or still closed)
    /// and the subscribers were told otherwise more than `interval` ago.
    pub async fn claim_due(
        &self,
        destination: &DestinationId,
        open: bool,
        interval: Duration,
    ) -> Result<Claimed, BrokerError> {
        let written = self
            .transition(destination, |s, now| {
                let mut next = s.clone();
                (s.open == open && next.claim(now, interval) == Claim::Claimed).then_some(next)
            })
            .await?;
        if let Some((_, after)) = written {
            return Ok(Claimed::News(CircuitNews::of(&after)));
        }
        let known = self.known.read().expect("circuit lock is never poisoned");
        Ok(match known.get(destination.as_str()) {
            Some((s, _)) if s.open == open => match s.claim_state(Utc::now(), interval) {
                Claim::Deferred(due) => Claimed::Later(due),
                _ => Claimed::Nothing,
            },
            _ => Claimed::Nothing,
        })
    }

    fn is_known(&self, destination: &str) -> bool {
        let known = self.known.read().expect("circuit lock is never poisoned");
        known.contains_key(destination)
    }

    /// What a written transition leads to besides the entry: the consumer paused or
    /// resumed, a log line, the metric.
    async fn act_on(
        &self,
        destination: &DestinationId,
        before: &Stored,
        after: &Stored,
        may_pause: bool,
    ) -> Result<(), BrokerError> {
        let name = names::consumer_name(destination);
        let shard = names::shard_of(destination.as_str(), self.shards.len() as u32);
        // A destination without a consumer now has nothing to pause or resume: the
        // dispatcher's gate holds it back, and its next consumer is made paused or not.
        let consumer_stream = &self.shards[shard as usize];
        if before.open && !after.open {
            info!(destination_id = %destination, "circuit closed");
            if may_pause {
                consumers::set_paused(consumer_stream, &name, false).await?;
            }
        } else if after.open && after.opened_at != before.opened_at {
            let until = after.until.expect("an open circuit has an end");
            warn!(destination_id = %destination, failures = after.failures, until = %until, "circuit open");
            metrics::counter!(m::CIRCUIT_OPENED).increment(1);
            if may_pause {
                // The server resumes the consumer by itself when the cool-down ends.
                consumers::pause_until(consumer_stream, &name, until).await?;
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
            // Entries also remember auto-disable and announcement facts of closed ones.
            .filter(|(_, v)| v.state != Phase::Closed || v.failures > 0)
            .collect()
    }
}

/// What an attempt did to the circuit that operational events care about.
#[derive(Debug, Default)]
pub struct Settled {
    /// This attempt claimed the announcement of the circuit's new state.
    pub news: Option<CircuitNews>,
    /// The state differs from what was announced less than the interval ago: it may be
    /// announced later ([`Circuits::claim_due`]).
    pub deferred: Option<Deferral>,
    /// Every attempt has failed since this time (none: the last one was delivered).
    pub failing_since: Option<DateTime<Utc>>,
}

/// An announcement put off by the interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deferral {
    /// The state to announce then, if it still holds.
    pub open: bool,
    pub failures: u32,
    pub due: DateTime<Utc>,
}

/// A circuit state to announce.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitNews {
    pub open: bool,
    pub failures: u32,
    pub opened_at: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl CircuitNews {
    fn of(s: &Stored) -> Self {
        Self {
            open: s.open,
            failures: s.failures,
            opened_at: s.opened_at.filter(|_| s.open),
            until: s.until.filter(|_| s.open),
        }
    }
}

/// The answer of [`Circuits::claim_due`].
#[derive(Debug, PartialEq)]
pub enum Claimed {
    News(CircuitNews),
    /// Still too early (another replica announced meanwhile): ask again then.
    Later(DateTime<Utc>),
    /// Nothing to announce: the subscribers know the state, or it changed again.
    Nothing,
}
