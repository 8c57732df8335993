//! Operational events (docs/adr/0013): hookstream telling a tenant about its own
//! destinations, as events of the tenant on `hs.ev.<tenant>.hookstream.…`, delivered to
//! the destinations subscribed to them like any other event.
//!
//! - `hookstream.destination.disabled`: after a `410 Gone` or after failing for
//!   `delivery.disable_after_secs` (auto-disable, here too);
//! - `hookstream.destination.circuit_opened` / `circuit_closed`: claimed in the circuit's
//!   own compare-and-set (`flow/circuit_state.rs`), at most once per
//!   `flow.circuit_announce_interval_ms` per destination, the state a flap ends in told
//!   when the interval is over (`deferred.rs`);
//! - `hookstream.event.dead_lettered`: from `delivery/dead_letter.rs`, the one path of
//!   every dead letter.
//!
//! An operational event never causes another: what the attempt of an operational event
//! leads to (its dead letter, a circuit change, a disable) is not announced, so a
//! subscriber failing on them cannot feed on itself. The destination's state changes all
//! the same. Nothing here knows HTTP; `notice.rs` is the publish.

mod deferred;
pub mod notice;

use std::sync::Arc;

use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::config::Config;
use crate::destinations::DestinationStore;
use crate::flow::Flow;
use crate::flow::circuit::{CircuitNews, Settled};
use crate::model::{Destination, Envelope, EventId, TenantId};
use deferred::Deferred;
pub use notice::Notice;

pub const DESTINATION_DISABLED: &str = "hookstream.destination.disabled";
pub const CIRCUIT_OPENED: &str = "hookstream.destination.circuit_opened";
pub const CIRCUIT_CLOSED: &str = "hookstream.destination.circuit_closed";
pub const EVENT_DEAD_LETTERED: &str = "hookstream.event.dead_lettered";
/// Every operational event type.
pub const TYPES: [&str; 4] = [
    DESTINATION_DISABLED,
    CIRCUIT_OPENED,
    CIRCUIT_CLOSED,
    EVENT_DEAD_LETTERED,
];

/// Whether events of this type are operational events (what they lead to is not
/// announced). `hookstream.test` is not one: a failing test event is worth knowing of.
pub fn is_operational(event_type: &str) -> bool {
    TYPES.contains(&event_type)
}

/// Why hookstream disabled a destination by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisableReason {
    /// The receiver answered `410 Gone`.
    Gone,
    /// Every attempt failed for `delivery.disable_after_secs`.
    Failing,
}

impl DisableReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::Failing => "failing",
        }
    }
}

/// The attempt an operational event tells of.
pub struct Attempted<'a> {
    pub event: &'a Envelope,
    pub status: Option<u16>,
    pub error: Option<&'a str>,
}

impl Attempted<'_> {
    /// Whether what this attempt leads to is announced.
    pub fn announces(&self) -> bool {
        !is_operational(self.event.event_type.as_str())
    }

    fn answer(&self) -> String {
        match (self.status, self.error) {
            (Some(s), _) => format!("HTTP {s}"),
            (None, Some(e)) => e.to_string(),
            (None, None) => "no answer".to_string(),
        }
    }

    fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// What the worker calls after attempts; one per worker.
pub struct Operations {
    broker: Broker,
    store: DestinationStore,
    deferred: Arc<Deferred>,
    /// `None`: auto-disable is off.
    disable_after: Option<chrono::Duration>,
}

impl Operations {
    pub fn new(
        broker: Broker,
        store: DestinationStore,
        flow: &Flow,
        cfg: &Config,
        tracker: TaskTracker,
        token: CancellationToken,
    ) -> Self {
        let disable_after = cfg.delivery.disable_after;
        Self {
            deferred: Arc::new(Deferred::new(
                broker.clone(),
                flow.circuits.clone(),
                flow.announce_interval(),
                tracker,
                token,
            )),
            broker,
            store,
            disable_after: (!disable_after.is_zero())
                .then(|| chrono::Duration::from_std(disable_after).ok())
                .flatten(),
        }
    }

    /// After an attempt and its circuit bookkeeping: announce the circuit's change (now,
    /// or once the interval is over), and disable a destination that has been failing
    /// for too long.
    pub async fn after_attempt(
        &self,
        destination: &Destination,
        attempt: &Attempted<'_>,
        settled: Settled,
    ) {
        let now = Utc::now();
        if attempt.announces() {
            if let Some(news) = &settled.news {
                let context = Context::of(attempt, news.open, news.failures);
                notice::publish(&self.broker, circuit_notice(destination, news, &context)).await;
            }
            if let Some(deferral) = settled.deferred {
                let context = Context::of(attempt, deferral.open, deferral.failures);
                self.deferred.put(destination, deferral, context);
            }
        }
        if attempt.delivered() || !destination.enabled {
            return;
        }
        let (Some(after), Some(since)) = (self.disable_after, settled.failing_since) else {
            return;
        };
        // A change to the destination (re-enabling it, a new URL) starts the count again.
        let from = since.max(destination.updated_at);
        if now - from >= after {
            let why = format!(
                "every attempt failed since {}, the last: {}",
                from.to_rfc3339(),
                attempt.answer()
            );
            self.disable(destination, DisableReason::Failing, why, attempt)
                .await;
        }
    }

    /// Disables `destination` on hookstream's own initiative and announces it, if this
    /// call is what disabled it. `why` is said in the event; `disabled_reason` is the
    /// receiver's 410 for `Gone` (as before), `"failing"` for `Failing` (the contract).
    pub async fn disable(
        &self,
        destination: &Destination,
        reason: DisableReason,
        why: String,
        attempt: &Attempted<'_>,
    ) {
        let stored_reason = match reason {
            DisableReason::Gone => why.clone(),
            DisableReason::Failing => reason.as_str().to_string(),
        };
        match self.store.disable(&destination.id, stored_reason).await {
            Ok(true) => {
                info!(destination_id = %destination.id, reason = reason.as_str(), "destination disabled");
                if attempt.announces() {
                    let notice = Notice::new(
                        destination.tenant.clone(),
                        DESTINATION_DISABLED,
                        json!({
                            "destination_id": destination.id,
                            "event_id": attempt.event.id,
                            "reason": reason.as_str(),
                            "message": why,
                            "last_answer": attempt.answer(),
                        }),
                    );
                    notice::publish(&self.broker, notice).await;
                }
            }
            Ok(false) => {}
            Err(e) => {
                warn!(destination_id = %destination.id, reason = reason.as_str(), error = %e, "could not disable destination");
            }
        }
    }
}

/// What an announcement of a circuit says about the attempt that changed it.
#[derive(Debug, Clone)]
pub struct Context {
    event_id: EventId,
    reason: String,
}

impl Context {
    fn of(attempt: &Attempted<'_>, open: bool, failures: u32) -> Self {
        let reason = if open {
            format!(
                "{failures} consecutive failed attempts, the last: {}",
                attempt.answer()
            )
        } else {
            format!("an attempt was answered {}", attempt.answer())
        };
        Self {
            event_id: attempt.event.id.clone(),
            reason,
        }
    }
}

fn circuit_notice(destination: &Destination, news: &CircuitNews, context: &Context) -> Notice {
    circuit_notice_of(&destination.tenant, destination.id.as_str(), news, context)
}

fn circuit_notice_of(
    tenant: &TenantId,
    destination_id: &str,
    news: &CircuitNews,
    context: &Context,
) -> Notice {
    let now = Utc::now();
    if news.open {
        Notice::new(
            tenant.clone(),
            CIRCUIT_OPENED,
            json!({
                "destination_id": destination_id,
                "event_id": context.event_id,
                "reason": context.reason,
                "failures": news.failures,
                "opened_at": news.opened_at,
                "until": news.until,
            }),
        )
    } else {
        Notice::new(
            tenant.clone(),
            CIRCUIT_CLOSED,
            json!({
                "destination_id": destination_id,
                "event_id": context.event_id,
                "reason": context.reason,
                "closed_at": now,
            }),
        )
    }
}

/// A dead letter just stored, as `delivery/dead_letter.rs` knows it.
pub struct DeadLettered<'a> {
    pub tenant: &'a str,
    pub destination_id: &'a str,
    pub event_id: Option<&'a str>,
    pub reason: &'static str,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<&'a str>,
    pub original_seq: u64,
    /// The original body: the envelope, or whatever did not parse as one.
    pub body: &'a [u8],
}

/// Announces a dead letter, unless it is one of an operational event.
pub async fn dead_lettered(broker: &Broker, letter: DeadLettered<'_>) {
    /// What can be read of the original body, whether or not it is a valid envelope.
    #[derive(Deserialize)]
    struct Peek {
        id: Option<String>,
        #[serde(rename = "type")]
        event_type: Option<String>,
    }
    let peek: Option<Peek> = serde_json::from_slice(letter.body).ok();
    let event_type = peek.as_ref().and_then(|p| p.event_type.as_deref());
    if event_type.is_some_and(is_operational) {
        return;
    }
    let Ok(tenant) = TenantId::parse(letter.tenant) else {
        return;
    };
    // One per (message, destination): a dead letter stored twice (a crash before the
    // original's ack) is announced once, the duplicate window drops the copy.
    let Ok(id) = EventId::parse(format!(
        "hsop_dl_{}_{}",
        letter.original_seq, letter.destination_id
    )) else {
        return;
    };
    let event_id = letter
        .event_id
        .or_else(|| peek.as_ref().and_then(|p| p.id.as_deref()));
    let notice = Notice {
        id,
        tenant,
        event_type: EVENT_DEAD_LETTERED,
        occurred_at: Utc::now(),
        data: json!({
            "destination_id": letter.destination_id,
            "event_id": event_id,
            "event_type": event_type,
            "reason": letter.reason,
            "attempts": letter.attempts,
            "last_status": letter.last_status,
            "last_error": letter.last_error,
            "original_seq": letter.original_seq,
        }),
    };
    notice::publish(broker, notice).await;
}
