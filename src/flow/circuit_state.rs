//! The circuit entry stored in KV `hs_circuit` for one destination, and what each attempt
//! does to it: pure functions, no I/O (the KV side, the local copy and the consumer pauses
//! are `circuit.rs`).
//!
//! Besides the breaker itself the entry keeps two facts for operational events
//! (`src/operations/`, docs/adr/0013): since when every attempt of the destination has
//! failed (`failing_since`, for auto-disable) and what its subscribers were last told about
//! the circuit (`announced`). Keeping them in the same entry makes them cost nothing more
//! than the breaker already does (a healthy destination has no entry), and makes the claim
//! of an announcement part of the transition's compare-and-set: of the replicas that see
//! a circuit open, exactly one announces it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::circuit::Phase;

#[derive(Debug, Clone, Copy)]
pub struct CircuitPolicy {
    pub threshold: u32,
    pub cooldown: Duration,
    pub probes: u32,
}

/// How an attempt bears on the circuit (and on auto-disable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// The receiver answered, but not with a 2xx (a 4xx about this one request, a 3xx):
    /// alive for the circuit, a failed attempt all the same.
    Refused,
    /// No answer, 5xx, 408 or 429.
    Unwell,
}

/// What subscribers were last told about a circuit, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announced {
    /// `true`: `circuit_opened` was the last announcement; `false`: `circuit_closed`.
    pub open: bool,
    pub at: DateTime<Utc>,
}

/// What is stored: closed (with a failure count) or open until a time. Half-open is
/// "open and the cool-down is over".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub open: bool,
    /// Consecutive failed attempts that said "the receiver is not well".
    pub failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<DateTime<Utc>>,
    /// End of the cool-down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// Probes granted since the cool-down ended.
    #[serde(default)]
    pub probes: u32,
    /// The first failed attempt since the last delivered one (any failure: 4xx too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<DateTime<Utc>>,
    /// The last announcement of this circuit; none yet means "closed, never told".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<Announced>,
}

/// Whether the circuit's state may be announced now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The subscribers already know this state.
    Nothing,
    /// Claimed: announce it.
    Claimed,
    /// Different from what was announced, but the last announcement was less than the
    /// interval ago: not before this time.
    Deferred(DateTime<Utc>),
}

impl Stored {
    pub fn closed() -> Self {
        Self {
            open: false,
            failures: 0,
            opened_at: None,
            until: None,
            probes: 0,
            failing_since: None,
            announced: None,
        }
    }

    pub fn phase(&self, now: DateTime<Utc>) -> Phase {
        match (self.open, self.until) {
            (false, _) => Phase::Closed,
            (true, Some(until)) if now < until => Phase::Open,
            (true, _) => Phase::HalfOpen,
        }
    }

    /// The entry after an attempt with `verdict`; `None`: nothing to write.
    pub fn after(
        &self,
        verdict: Verdict,
        now: DateTime<Utc>,
        policy: &CircuitPolicy,
    ) -> Option<Self> {
        let closed = |failing_since| Self {
            failing_since,
            announced: self.announced,
            ..Self::closed()
        };
        match verdict {
            Verdict::Delivered => (self.open || self.failures > 0 || self.failing_since.is_some())
                .then(|| closed(None)),
            Verdict::Refused => (self.open || self.failures > 0 || self.failing_since.is_none())
                .then(|| closed(self.failing_since.or(Some(now)))),
            Verdict::Unwell => {
                let failures = self.failures.saturating_add(1);
                let failing_since = self.failing_since.or(Some(now));
                let open_now = match self.phase(now) {
                    Phase::Closed => failures >= policy.threshold,
                    // A probe failed: another cool-down.
                    Phase::HalfOpen => true,
                    // A request that was in flight when it opened: nothing to change, so
                    // nothing written.
                    Phase::Open => return None,
                };
                Some(if open_now {
                    Self {
                        open: true,
                        failures,
                        opened_at: Some(now),
                        until: Some(now + chrono_of(policy.cooldown)),
                        probes: 0,
                        failing_since,
                        announced: self.announced,
                    }
                } else {
                    Self {
                        failures,
                        failing_since,
                        ..self.clone()
                    }
                })
            }
        }
    }

    /// Whether the circuit's state (open, half-open counting as open, or closed) may be
    /// announced now, at most once per `interval`.
    pub fn claim_state(&self, now: DateTime<Utc>, interval: Duration) -> Claim {
        let told_open = self.announced.is_some_and(|a| a.open);
        if self.open == told_open {
            return Claim::Nothing;
        }
        match self.announced {
            Some(last) if now < last.at + chrono_of(interval) => {
                Claim::Deferred(last.at + chrono_of(interval))
            }
            _ => Claim::Claimed,
        }
    }

    /// Takes the announcement of the current state when [`Stored::claim_state`] allows it.
    pub fn claim(&mut self, now: DateTime<Utc>, interval: Duration) -> Claim {
        let claim = self.claim_state(now, interval);
        if claim == Claim::Claimed {
            self.announced = Some(Announced {
                open: self.open,
                at: now,
            });
        }
        claim
    }
}

pub fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CircuitPolicy = CircuitPolicy {
        threshold: 2,
        cooldown: Duration::from_secs(30),
        probes: 1,
    };
    const MINUTE: Duration = Duration::from_secs(60);

    fn secs(s: i64) -> chrono::Duration {
        chrono::Duration::seconds(s)
    }

    #[test]
    fn half_open_is_open_after_the_cool_down() {
        let now = Utc::now();
        let open = Stored {
            open: true,
            failures: 5,
            opened_at: Some(now),
            until: Some(now + secs(30)),
            ..Stored::closed()
        };
        assert_eq!(open.phase(now), Phase::Open);
        assert_eq!(open.phase(now + secs(31)), Phase::HalfOpen);
        assert_eq!(Stored::closed().phase(now), Phase::Closed);
    }

    #[test]
    fn failing_since_is_the_first_failure_after_a_delivery_and_a_4xx_counts() {
        let t0 = Utc::now();
        let refused = Stored::closed()
            .after(Verdict::Refused, t0, &POLICY)
            .expect("the first failure is written");
        assert_eq!(refused.failing_since, Some(t0));
        assert_eq!(refused.failures, 0, "a 4xx does not count for the breaker");
        assert!(
            refused
                .after(Verdict::Refused, t0 + secs(5), &POLICY)
                .is_none(),
            "a later 4xx changes nothing: nothing to write"
        );
        let unwell = refused
            .after(Verdict::Unwell, t0 + secs(9), &POLICY)
            .expect("a failure counts");
        assert_eq!(unwell.failing_since, Some(t0), "the first failure is kept");
        let delivered = unwell
            .after(Verdict::Delivered, t0 + secs(10), &POLICY)
            .expect("a delivery resets");
        assert_eq!(delivered, Stored::closed());
        assert!(
            Stored::closed()
                .after(Verdict::Delivered, t0, &POLICY)
                .is_none()
        );
    }

    #[test]
    fn an_opening_is_claimed_at_once_and_a_flap_within_the_interval_is_deferred() {
        let t0 = Utc::now();
        let mut s = Stored::closed();
        assert_eq!(s.claim(t0, MINUTE), Claim::Nothing, "closed, never told");
        s = s.after(Verdict::Unwell, t0, &POLICY).expect("one failure");
        s = s.after(Verdict::Unwell, t0, &POLICY).expect("opens");
        assert!(s.open);
        assert_eq!(s.claim(t0, MINUTE), Claim::Claimed);
        assert_eq!(s.announced, Some(Announced { open: true, at: t0 }));
        assert_eq!(s.claim(t0, MINUTE), Claim::Nothing, "told already");

        // Closed ten seconds later: not announced before a minute has passed.
        s = s
            .after(Verdict::Delivered, t0 + secs(10), &POLICY)
            .expect("closes");
        assert!(!s.open);
        assert_eq!(s.announced, Some(Announced { open: true, at: t0 }), "kept");
        let due = t0 + secs(60);
        assert_eq!(s.claim(t0 + secs(10), MINUTE), Claim::Deferred(due));
        // Open again before the minute: the subscribers' last word (open) is true again.
        let mut reopened = s.after(Verdict::Unwell, t0 + secs(20), &POLICY).expect("1");
        reopened = reopened
            .after(Verdict::Unwell, t0 + secs(20), &POLICY)
            .expect("2");
        assert_eq!(reopened.claim(t0 + secs(61), MINUTE), Claim::Nothing);
        // Still closed at the minute: now it is announced.
        assert_eq!(s.claim(due, MINUTE), Claim::Claimed);
        assert_eq!(
            s.announced,
            Some(Announced {
                open: false,
                at: due
            })
        );
    }

    #[test]
    fn a_probe_failing_again_is_no_new_opening_to_announce() {
        let t0 = Utc::now();
        let mut s = Stored::closed()
            .after(Verdict::Unwell, t0, &POLICY)
            .and_then(|s| s.after(Verdict::Unwell, t0, &POLICY))
            .expect("open");
        assert_eq!(s.claim(t0, MINUTE), Claim::Claimed);
        let half_open = t0 + secs(31);
        let again = s
            .after(Verdict::Unwell, half_open, &POLICY)
            .expect("reopens");
        assert_eq!(again.opened_at, Some(half_open));
        assert_eq!(again.claim_state(t0 + secs(90), MINUTE), Claim::Nothing);
    }
}
