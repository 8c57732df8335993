//! One delivery message from a destination's consumer (`dest_<id>` on its shard), start
//! to finish: parse, count the attempt, send, record, then acknowledge, retry later, or
//! dead-letter. The router already chose the destination (docs/adr/0010): what is here
//! is delivered, whatever the destination's patterns say now.
//!
//! Order matters and is the same everywhere: the attempt record is stored before the
//! message is acked or nak'd (the next attempt counts from it), and a dead letter is
//! stored before its attempt record and before the original is acked.
//!
//! Longer than most files here (about 540 lines) on purpose: it is that one sequence of
//! writes, and its steps read in order; what does not depend on the order lives beside it
//! (`outcome.rs` decides, `request.rs` builds, `history.rs` records, `dead_letter.rs`
//! stores).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, warn};

use super::dead_letter;
use super::outcome::{self, Outcome};
use super::request;
use super::sender::{self, Sender};
use super::stats::StatsCounters;
use crate::broker::Broker;
use crate::broker::consumers::ConsumerPolicy;
use crate::broker::names::headers as h;
use crate::destinations::DestinationStore;
use crate::dlq::{DeadLetter, DlqReason};
use crate::flow::{self, Admission, Flow};
use crate::history;
use crate::model::{AttemptOutcome, AttemptRecord, Destination, Envelope};
use crate::operations::{Attempted, DisableReason, Operations};
use crate::telemetry::metrics as m;
use crate::telemetry::{propagation, spans};

/// What the dispatcher should do for the destination after a message was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Done,
    /// The message was nak'd: pull again after this long.
    RetryIn(Duration),
}

pub struct Deliverer {
    pub broker: Broker,
    pub sender: Sender,
    pub flow: Arc<Flow>,
    pub store: DestinationStore,
    pub stats: Arc<StatsCounters>,
    pub retry_after_cap: Duration,
    /// The ack-wait rule, shared with the consumers' configuration.
    pub consumer_policy: ConsumerPolicy,
    /// Operational events: circuit announcements, auto-disable, disable after a 410.
    pub operations: Operations,
    pub token: CancellationToken,
}

/// An event parsed from its delivery message, ready to send.
struct Incoming {
    envelope: Envelope,
    body: Bytes,
    /// The event's sequence on `HS_EVENTS` (`Hs-Event-Seq`): what attempt records and
    /// dead letters name, whichever shard copy is being delivered.
    seq: u64,
    delivered: i64,
}

/// What one HTTP attempt led to, before it is recorded.
struct Tried {
    number: u32,
    started_at: DateTime<Utc>,
    response: sender::Response,
}

impl Deliverer {
    pub async fn handle(&self, destination: &Destination, msg: Message) -> Handled {
        let (seq, delivered) = match msg.info() {
            Ok(info) => (
                event_seq(&msg).unwrap_or(info.stream_sequence),
                info.delivered,
            ),
            Err(e) => {
                // Not a JetStream message: nothing to ack. Cannot happen on a pull.
                warn!(error = %e, "message without JetStream metadata");
                return Handled::Done;
            }
        };
        // The consumer span of this delivery; its parent is the message's traceparent.
        let span = spans::process(
            destination.id.as_str(),
            msg.subject.as_str(),
            msg.headers.as_ref(),
            delivered,
        );
        self.handle_parsed(destination, msg, seq, delivered)
            .instrument(span)
            .await
    }

    async fn handle_parsed(
        &self,
        destination: &Destination,
        msg: Message,
        seq: u64,
        delivered: i64,
    ) -> Handled {
        match self.parse(destination, &msg, seq, delivered) {
            Ok(incoming) => self.deliver(destination, msg, incoming).await,
            Err((reason, why)) => {
                self.dead_letter_unparsable(destination, msg, seq, reason, &why)
                    .await
            }
        }
    }

    fn parse(
        &self,
        destination: &Destination,
        msg: &Message,
        seq: u64,
        delivered: i64,
    ) -> Result<Incoming, (DlqReason, String)> {
        let malformed = |why: String| (DlqReason::MalformedEvent, why);
        if self
            .broker
            .subjects
            .parse_delivery_subject(msg.subject.as_str())
            != Some(destination.id.as_str())
        {
            return Err(malformed(format!("unexpected subject {}", msg.subject)));
        }
        if event_seq(msg).is_none() {
            return Err(malformed(format!("no {} header", h::EVENT_SEQ)));
        }
        let envelope: Envelope = serde_json::from_slice(&msg.payload)
            .map_err(|e| malformed(format!("body is not an event envelope: {e}")))?;
        if envelope.tenant != destination.tenant {
            return Err((
                DlqReason::TenantMismatch,
                format!(
                    "event of tenant {} for a destination of tenant {}",
                    envelope.tenant, destination.tenant
                ),
            ));
        }
        spans::record_event_id(&Span::current(), envelope.id.as_str());
        Ok(Incoming {
            envelope,
            body: msg.payload.clone(),
            seq,
            delivered,
        })
    }

    async fn deliver(&self, destination: &Destination, msg: Message, event: Incoming) -> Handled {
        let last = if event.delivered > 1 {
            self.last_attempt(&event, destination).await
        } else {
            None
        };
        let mut number = match &last {
            Some(rec) if rec.stream_seq == event.seq => match rec.outcome {
                // Finished before a crash kept the ack from reaching the server.
                AttemptOutcome::Delivered | AttemptOutcome::DeadLettered => {
                    ack(&msg, AckKind::Ack).await;
                    return Handled::Done;
                }
                AttemptOutcome::Retrying => rec.attempt + 1,
            },
            _ => 1,
        };
        let ack_wait = self.consumer_policy.ack_wait(destination);
        loop {
            // Rate limit and circuit first: waiting or being held back uses up no attempt.
            let admitted = tokio::select! {
                a = keep_alive(&msg, ack_wait, self.flow.admit(destination)) => Some(a),
                _ = self.token.cancelled() => None,
            };
            match admitted {
                Some(Admission::Send) => {}
                Some(Admission::Hold(delay)) => {
                    ack(&msg, AckKind::Nak(Some(delay))).await;
                    return Handled::RetryIn(delay);
                }
                None => {
                    ack(&msg, AckKind::Nak(None)).await;
                    return Handled::Done;
                }
            }
            let tried = keep_alive(
                &msg,
                ack_wait,
                self.attempt(destination, &event, number, &msg),
            )
            .await;
            let response = &tried.response;
            let attempted = attempted(&event, response);
            let settled = self
                .flow
                .settle(
                    destination,
                    flow::verdict(response.status),
                    attempted.announces(),
                )
                .await;
            self.operations
                .after_attempt(destination, &attempted, settled)
                .await;
            let delay = match outcome::after_attempt(
                response,
                &destination.retry,
                number,
                self.retry_after_cap,
            ) {
                Outcome::Delivered => {
                    self.record(destination, &event, &tried, AttemptOutcome::Delivered, None)
                        .await;
                    ack(&msg, AckKind::Ack).await;
                    spans::record_outcome(&Span::current(), "delivered", None);
                    return Handled::Done;
                }
                Outcome::GiveUp(reason) => {
                    return self
                        .give_up(destination, &msg, &event, &tried, reason)
                        .await;
                }
                Outcome::RetryIn(delay) => delay,
            };
            let next_at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            self.record(
                destination,
                &event,
                &tried,
                AttemptOutcome::Retrying,
                Some(next_at),
            )
            .await;
            metrics::counter!(m::RETRIES_SCHEDULED, "destination" => m::destination_label(destination.id.as_str()))
                .increment(1);
            spans::record_outcome(&Span::current(), "retrying", Some(delay.as_millis() as u64));
            if !destination.ordered {
                ack(&msg, AckKind::Nak(Some(delay))).await;
                return Handled::RetryIn(delay);
            }
            // Ordered: the message keeps its place (max_ack_pending is 1) and is retried
            // here, so nothing after it can overtake it.
            let waited = tokio::select! {
                _ = keep_alive(&msg, ack_wait, tokio::time::sleep(delay)) => true,
                _ = self.token.cancelled() => false,
            };
            if !waited {
                ack(&msg, AckKind::Nak(Some(delay))).await;
                return Handled::RetryIn(delay);
            }
            number += 1;
        }
    }

    async fn attempt(
        &self,
        destination: &Destination,
        event: &Incoming,
        number: u32,
        msg: &Message,
    ) -> Tried {
        let started_at = Utc::now();
        let span = spans::attempt(
            request::method_name(destination.method),
            event.envelope.id.as_str(),
            destination.id.as_str(),
            number,
        );
        // Traces on: the receiver's parent is this attempt's span. Off: the message's own
        // traceparent (the producer's), if it has one, as before.
        let own = propagation::traceparent_of(&span);
        let traceparent = own
            .as_deref()
            .or_else(|| propagation::nats_traceparent(msg.headers.as_ref()));
        let request = request::build(
            destination,
            &event.envelope,
            &event.body,
            number,
            started_at.timestamp(),
            traceparent,
        );
        let response = match request {
            Ok(request) => {
                spans::record_attempt_url(&span, request.url.as_str());
                self.sender.send(request).instrument(span.clone()).await
            }
            Err(error) => sender::Response {
                status: None,
                body: None,
                error: Some(error),
                retry_after: None,
                duration: Duration::ZERO,
            },
        };
        spans::record_attempt_result(&span, response.status, response.error.as_deref());
        metrics::histogram!(m::ATTEMPT_DURATION).record(response.duration.as_secs_f64());
        debug!(
            event_id = %event.envelope.id,
            destination_id = %destination.id,
            attempt = number,
            status = ?response.status,
            error = ?response.error,
            ms = response.duration.as_millis() as u64,
            "attempt finished"
        );
        Tried {
            number,
            started_at,
            response,
        }
    }

    async fn give_up(
        &self,
        destination: &Destination,
        msg: &Message,
        event: &Incoming,
        tried: &Tried,
        reason: DlqReason,
    ) -> Handled {
        let first_attempt_at = self.first_attempt_at(event, destination).await;
        let last_error = tried.response.error.clone().unwrap_or_else(|| {
            tried
                .response
                .status
                .map_or_else(String::new, |s| format!("HTTP {s}"))
        });
        let letter = DeadLetter {
            tenant: event.envelope.tenant.as_str(),
            destination_id: destination.id.as_str(),
            reason,
            original_headers: msg.headers.as_ref(),
            body: event.body.clone(),
            original_seq: event.seq,
            attempts: tried.number,
            last_status: tried.response.status,
            last_error: Some(last_error.as_str()),
            first_attempt_at: first_attempt_at.or(Some(tried.started_at)),
            last_attempt_at: Some(tried.started_at),
        };
        if let Err(e) = dead_letter::store(
            &self.broker,
            &self.stats,
            Some(event.envelope.id.as_str()),
            letter,
        )
        .await
        {
            // Not stored: keep the original and try the last step again later.
            warn!(event_id = %event.envelope.id, destination_id = %destination.id, error = %e, "dead letter not stored; will retry");
            let delay = Duration::from_secs(5);
            ack(msg, AckKind::Nak(Some(delay))).await;
            return Handled::RetryIn(delay);
        }
        self.record(
            destination,
            event,
            tried,
            AttemptOutcome::DeadLettered,
            None,
        )
        .await;
        ack(msg, AckKind::Ack).await;
        spans::record_outcome(&Span::current(), "dead_lettered", None);
        if reason == DlqReason::Gone {
            let why = format!(
                "receiver answered 410 Gone at {}",
                tried.started_at.to_rfc3339()
            );
            self.operations
                .disable(
                    destination,
                    DisableReason::Gone,
                    why,
                    &attempted(event, &tried.response),
                )
                .await;
        }
        Handled::Done
    }

    /// A delivery message that cannot be delivered as it stands (the router checks the
    /// same, so only a message written by something else gets here).
    async fn dead_letter_unparsable(
        &self,
        destination: &Destination,
        msg: Message,
        seq: u64,
        reason: DlqReason,
        why: &str,
    ) -> Handled {
        let letter = DeadLetter::unattempted(
            destination.tenant.as_str(),
            destination.id.as_str(),
            reason,
            &msg,
            seq,
            why,
        );
        match dead_letter::store(&self.broker, &self.stats, None, letter).await {
            Ok(()) => {
                ack(&msg, AckKind::Ack).await;
                Handled::Done
            }
            Err(e) => {
                warn!(destination_id = %destination.id, error = %e, "unparsable delivery not dead-lettered; will retry");
                let delay = Duration::from_secs(5);
                ack(&msg, AckKind::Nak(Some(delay))).await;
                Handled::RetryIn(delay)
            }
        }
    }

    /// Stores the attempt record; a failure is logged, not fatal (the delivery happened).
    async fn record(
        &self,
        destination: &Destination,
        event: &Incoming,
        tried: &Tried,
        outcome: AttemptOutcome,
        next_attempt_at: Option<DateTime<Utc>>,
    ) {
        // A dead letter is counted where it is stored (`dead_letter::store`); its last
        // attempt failed like any other.
        let counter = match outcome {
            AttemptOutcome::Delivered => super::stats::Counter::Delivered,
            AttemptOutcome::Retrying | AttemptOutcome::DeadLettered => {
                super::stats::Counter::Failed
            }
        };
        self.stats.add(destination.id.as_str(), counter);
        let outcome_label = match outcome {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retrying => "failed",
            AttemptOutcome::DeadLettered => "dead_lettered",
        };
        metrics::counter!(
            m::DELIVERIES,
            "outcome" => outcome_label,
            "destination" => m::destination_label(destination.id.as_str())
        )
        .increment(1);
        let r = &tried.response;
        let record = AttemptRecord {
            event_id: event.envelope.id.to_string(),
            tenant: event.envelope.tenant.to_string(),
            destination_id: destination.id.to_string(),
            event_type: event.envelope.event_type.to_string(),
            attempt: tried.number,
            started_at: tried.started_at,
            duration_ms: r.duration.as_millis() as u64,
            status: r.status,
            response_body: r.body.clone(),
            error: r.error.clone(),
            outcome,
            next_attempt_at,
            stream_seq: event.seq,
        };
        if let Err(e) = history::store_attempt(&self.broker, &record).await {
            warn!(event_id = %event.envelope.id, destination_id = %destination.id, error = %e, "attempt record not stored");
        }
    }

    async fn last_attempt(
        &self,
        event: &Incoming,
        destination: &Destination,
    ) -> Option<AttemptRecord> {
        history::attempt_of(
            &self.broker,
            history::Which::Last,
            event.envelope.tenant.as_str(),
            event.envelope.id.as_str(),
            destination.id.as_str(),
        )
        .await
    }

    async fn first_attempt_at(
        &self,
        event: &Incoming,
        destination: &Destination,
    ) -> Option<DateTime<Utc>> {
        let record = history::attempt_of(
            &self.broker,
            history::Which::First,
            event.envelope.tenant.as_str(),
            event.envelope.id.as_str(),
            destination.id.as_str(),
        )
        .await?;
        (record.stream_seq == event.seq).then_some(record.started_at)
    }
}

/// The attempt as operational events tell of it.
fn attempted<'a>(event: &'a Incoming, response: &'a sender::Response) -> Attempted<'a> {
    Attempted {
        event: &event.envelope,
        status: response.status,
        error: response.error.as_deref(),
    }
}

/// Runs `work`, telling the server "still working" every half ack wait so that a slow
/// attempt is never redelivered to another worker while it is still running.
async fn keep_alive<T>(msg: &Message, ack_wait: Duration, work: impl Future<Output = T>) -> T {
    let mut work = std::pin::pin!(work);
    let period = ack_wait / 2;
    loop {
        tokio::select! {
            // The work first: an admission is usually ready at once, and then the timer is
            // never registered (timers were 3 % of the worker's CPU per delivery).
            biased;
            out = &mut work => return out,
            _ = tokio::time::sleep(period) => ack(msg, AckKind::Progress).await,
        }
    }
}

/// The event's `HS_EVENTS` sequence, from the delivery message's `Hs-Event-Seq`.
fn event_seq(msg: &Message) -> Option<u64> {
    msg.headers
        .as_ref()?
        .get(h::name::EVENT_SEQ)?
        .as_str()
        .parse()
        .ok()
}

/// Acks are fire-and-forget publishes; a lost one means a redelivery, which the attempt
/// records turn into a no-op or a duplicate with the same `webhook-id`.
async fn ack(msg: &Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        warn!(error = %e, "acknowledgement not sent; the message will be redelivered");
    }
}
