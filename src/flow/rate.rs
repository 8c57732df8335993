//! Rate limits shared by all replicas: one GCRA state per key in KV `hs_ratelimit`,
//! changed by compare-and-set, with send times leased in small batches so that a busy
//! destination costs a KV round trip per batch, not per request (docs/adr/0006).
//!
//! A lease is a list of *send times* (GCRA slots), not a pile of tokens: a replica holding
//! five slots of a 20/s limit sends them 50 ms apart, exactly as if it had asked five
//! times, so leasing never lets a burst through that the limit would not. A lease is as
//! large as the number of requests waiting for the key in this replica, or larger while
//! demand lasts (it doubles each time a lease is used up and drops back when a slot goes
//! unused), capped, and spans at most `horizon`; so a quiet key reserves little it will
//! not use. A slot that is not used within [`STALE`] of its time is dropped, never sent late.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use bytes::Bytes;

use super::gcra::Gcra;
use crate::broker::BrokerError;
use crate::telemetry::metrics as m;

/// A slot older than this is dropped: sending it now could exceed the limit in the
/// window that ends now.
const STALE: Duration = Duration::from_millis(20);
/// Compare-and-set rounds before giving up on one reservation (busy key, many replicas).
const CAS_ROUNDS: usize = 32;
/// Local state of keys not used for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// A requests-per-second limit with a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub per_second: f64,
    pub burst: u32,
}

pub struct SharedRateLimiter {
    kv: kv::Store,
    /// How far ahead one lease may reserve.
    horizon: Duration,
    /// Slots in one lease at most.
    max_lease: u32,
    keys: Mutex<HashMap<String, Arc<KeyState>>>,
}

#[derive(Default)]
struct KeyState {
    /// Requests of this replica waiting for a slot of the key: the size of the next lease.
    waiting: AtomicU32,
    lease: tokio::sync::Mutex<Lease>,
}

#[derive(Default)]
struct Lease {
    /// Leased send times (µs since the epoch), oldest first.
    slots: VecDeque<u64>,
    /// The KV value and revision this replica wrote or read last: the next
    /// compare-and-set tries it before reading the key again.
    known: Option<(u64, u64)>,
    last_used: Option<std::time::Instant>,
    /// Size of the next lease when demand goes on: doubles each time a lease is used up,
    /// back to 1 when a slot goes unused.
    size: u32,
}

impl SharedRateLimiter {
    pub fn new(kv: kv::Store, horizon: Duration, max_lease: u32) -> Self {
        Self {
            kv,
            horizon,
            max_lease: max_lease.max(1),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for this request's send time. Answers how long it waited (zero: the limit
    /// did not hold it back).
    pub async fn acquire(&self, key: &str, limit: Limit) -> Result<Duration, BrokerError> {
        let state = self.state(key);
        state.waiting.fetch_add(1, Ordering::AcqRel);
        let slot = {
            let mut lease = state.lease.lock().await;
            let slot = match lease.next_fresh(now_us()) {
                Some(slot) => Ok(slot),
                None => {
                    lease.size = (lease.size.max(1) * 2).min(self.max_lease);
                    let want = state
                        .waiting
                        .load(Ordering::Acquire)
                        .max(lease.size)
                        .min(self.max_lease);
                    self.lease(key, limit, &mut lease, want, None)
                        .await
                        .map(|_| lease.slots.pop_front().expect("a lease has a slot"))
                }
            };
            state.waiting.fetch_sub(1, Ordering::AcqRel);
            slot?
        };
        let wait = Duration::from_micros(slot.saturating_sub(now_us()));
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(wait)
    }

    /// Send times for `n` requests now, or how long until there are (ingest: answer 429
    /// rather than wait). Reserves nothing in the future.
    pub async fn try_acquire(
        &self,
        key: &str,
        limit: Limit,
        n: u32,
    ) -> Result<Result<(), Duration>, BrokerError> {
        let state = self.state(key);
        let mut lease = state.lease.lock().await;
        let now = now_us();
        let stale = STALE.as_micros() as u64;
        lease.slots.retain(|&s| s + stale >= now && s <= now);
        if lease.slots.len() >= n as usize {
            lease.slots.drain(..n as usize);
            lease.last_used = Some(std::time::Instant::now());
            return Ok(Ok(()));
        }
        // What is left is too little: start over with a lease of at least `n` due now,
        // plus a twentieth of a second's worth for the requests that follow.
        lease.slots.clear();
        let extra = ((limit.per_second / 20.0).floor() as u32).min(self.max_lease);
        match self
            .lease(key, limit, &mut lease, n.saturating_add(extra), Some(n))
            .await?
        {
            Ok(()) => {
                lease.slots.drain(..n as usize);
                Ok(Ok(()))
            }
            Err(wait) => Ok(Err(wait)),
        }
    }

    fn state(&self, key: &str) -> Arc<KeyState> {
        let mut keys = self
            .keys
            .lock()
            .expect("rate limiter lock is never poisoned");
        if let Some(state) = keys.get(key) {
            return state.clone();
        }
        if keys.len() >= 1024 {
            // Forget keys nobody used for a while (their KV state stays authoritative).
            keys.retain(|_, s| {
                Arc::strong_count(s) > 1
                    || s.lease
                        .try_lock()
                        .map(|l| l.last_used.is_some_and(|t| t.elapsed() < FORGET_AFTER))
                        .unwrap_or(true)
            });
        }
        keys.entry(key.to_string()).or_default().clone()
    }

    /// Reserves up to `want` slots into `lease` by compare-and-set on the key. With
    /// `need_now: Some(n)`, reserves only slots that are due now, at least `n` of them, and
    /// otherwise writes nothing and answers how long until `n` are due.
    async fn lease(
        &self,
        key: &str,
        limit: Limit,
        lease: &mut Lease,
        want: u32,
        need_now: Option<u32>,
    ) -> Result<Result<(), Duration>, BrokerError> {
        let gcra = Gcra::new(limit.per_second, limit.burst);
        let now_only = need_now.is_some();
        let horizon = if now_only {
            0
        } else {
            self.horizon.as_micros() as u64
        };
        let mut known = lease.known;
        for _ in 0..CAS_ROUNDS {
            let (tat, revision) = match known {
                Some(k) => (k.0, Some(k.1)),
                None => self.read(key).await?,
            };
            let now = now_us();
            let (mut slots, mut new_tat) = gcra.reserve(tat, now, want, horizon);
            if let Some(n) = need_now {
                slots.retain(|&s| s <= now);
                if slots.len() < n as usize {
                    lease.known = revision.map(|r| (tat, r));
                    let (all, _) = gcra.reserve(tat, now, n, u64::MAX);
                    let due = all.last().copied().unwrap_or(now);
                    return Ok(Err(Duration::from_micros(due.saturating_sub(now))));
                }
                new_tat = gcra.reserve(tat, now, slots.len() as u32, 0).1;
            }
            let value = Bytes::from(new_tat.to_string());
            metrics::counter!(m::RATE_LIMIT_KV_WRITES).increment(1);
            let written = match revision {
                Some(r) => self.kv.update(key, value, r).await.map_err(|e| {
                    let conflict = e.kind() == UpdateErrorKind::WrongLastRevision;
                    (conflict, BrokerError::new("leasing rate-limit slots", e))
                }),
                None => self.kv.create(key, value).await.map_err(|e| {
                    let conflict = e.kind() == kv::CreateErrorKind::AlreadyExists;
                    (conflict, BrokerError::new("leasing rate-limit slots", e))
                }),
            };
            match written {
                Ok(revision) => {
                    lease.known = Some((new_tat, revision));
                    lease.last_used = Some(std::time::Instant::now());
                    lease.slots.extend(slots);
                    return Ok(Ok(()));
                }
                // Another replica (or an older revision in our cache): read and retry.
                Err((true, _)) => known = None,
                Err((false, e)) => {
                    lease.known = None;
                    return Err(e);
                }
            }
        }
        Err(BrokerError::new(
            "leasing rate-limit slots",
            format!(
                "key {key} changed {CAS_ROUNDS} times while leasing; too many replicas contend"
            ),
        ))
    }

    /// The key's TAT and revision; (0, revision) after a delete, (0, None) when absent.
    async fn read(&self, key: &str) -> Result<(u64, Option<u64>), BrokerError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| BrokerError::new("reading rate-limit state", e))?;
        Ok(match entry {
            None => (0, None),
            Some(e) if e.operation != Operation::Put => (0, Some(e.revision)),
            Some(e) => (
                std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                Some(e.revision),
            ),
        })
    }
}

impl Lease {
    /// The next slot that is not stale, dropping the stale ones.
    fn next_fresh(&mut self, now: u64) -> Option<u64> {
        let stale = STALE.as_micros() as u64;
        while let Some(slot) = self.slots.pop_front() {
            if slot + stale >= now {
                self.last_used = Some(std::time::Instant::now());
                return Some(slot);
            }
            // Demand fell behind the lease: lease less next time.
            self.size = 0;
        }
        None
    }
}

/// Wall-clock µs: replicas on different machines share TATs, so they need a shared
/// clock (NTP-synchronised; a skew of δ shifts one replica's view of the limit by δ).
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// The KV key of a destination's limit.
pub fn destination_key(destination_id: &str) -> String {
    format!("dest.{destination_id}")
}

/// The KV key of a tenant's ingest limit.
pub fn tenant_key(tenant: &str) -> String {
    format!("tenant.{tenant}")
}
