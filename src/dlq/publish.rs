//! Publishing a dead letter. The caller acknowledges the original only after this
//! returns `Ok`: a crash in between duplicates a dead letter, never loses one.

use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use tracing::Instrument;

use crate::broker::names::{self, headers as h};
use crate::broker::{Broker, BrokerError};
use crate::telemetry::{propagation, spans};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlqReason {
    /// Every attempt of the retry policy failed.
    MaxAttempts,
    /// The receiver answered `410 Gone`; the destination was disabled.
    Gone,
    /// The message on `HS_EVENTS` is not a valid event envelope.
    MalformedEvent,
    /// The message names another tenant than its subject (or than the destination it is
    /// aimed at).
    TenantMismatch,
    /// The destination already had `events.delivery_max_per_destination` deliveries
    /// waiting in its shard when the router had this one for it.
    BacklogFull,
}

impl DlqReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxAttempts => "max_attempts",
            Self::Gone => "gone",
            Self::MalformedEvent => "malformed_event",
            Self::TenantMismatch => "tenant_mismatch",
            Self::BacklogFull => "backlog_full",
        }
    }
}

#[derive(Clone)]
pub struct DeadLetter<'a> {
    pub tenant: &'a str,
    pub destination_id: &'a str,
    pub reason: DlqReason,
    pub original_headers: Option<&'a HeaderMap>,
    pub body: Bytes,
    pub original_seq: u64,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<&'a str>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
}

impl<'a> DeadLetter<'a> {
    /// The dead letter of a message that was never attempted (it cannot be delivered as
    /// it stands, or its destination's backlog is full): no attempts, `why` as its error.
    pub fn unattempted(
        tenant: &'a str,
        destination_id: &'a str,
        reason: DlqReason,
        original: &'a async_nats::jetstream::Message,
        original_seq: u64,
        why: &'a str,
    ) -> Self {
        Self {
            tenant,
            destination_id,
            reason,
            original_headers: original.headers.as_ref(),
            body: original.payload.clone(),
            original_seq,
            attempts: 0,
            last_status: None,
            last_error: Some(why),
            first_attempt_at: None,
            last_attempt_at: None,
        }
    }
}

/// Headers of the original that must not be copied: JetStream would act on them.
/// `Hs-Event-Seq` is the delivery copy's own (the dead letter says `Hs-Original-Seq`),
/// `Hs-Recorded` the accepted event's.
fn is_jetstream_control(name: &str) -> bool {
    name.eq_ignore_ascii_case(h::MSG_ID)
        || h::is_copy_local(name)
        || name.to_ascii_lowercase().starts_with("nats-expected")
}

pub async fn publish(broker: &Broker, letter: DeadLetter<'_>) -> Result<(), BrokerError> {
    let mut headers = HeaderMap::new();
    if let Some(original) = letter.original_headers {
        for (name, values) in original.iter() {
            if is_jetstream_control(name.as_ref()) {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    // The (event, destination, original message) triple: a redelivery after a crash
    // between this publish and the original's ack is dropped by the duplicate window.
    let msg_id = format!("dlq-{}-{}", letter.original_seq, letter.destination_id);
    headers.insert(h::MSG_ID, msg_id.as_str());
    headers.insert(h::DLQ_REASON, letter.reason.as_str());
    headers.insert(h::ATTEMPTS, letter.attempts.to_string().as_str());
    headers.insert(
        h::LAST_STATUS,
        letter
            .last_status
            .map_or_else(String::new, |s| s.to_string())
            .as_str(),
    );
    headers.insert(
        h::LAST_ERROR,
        sanitize(letter.last_error.unwrap_or("")).as_str(),
    );
    headers.insert(h::DESTINATION_ID, letter.destination_id);
    headers.insert(h::ORIGINAL_SEQ, letter.original_seq.to_string().as_str());
    let stamp = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    headers.insert(h::FIRST_ATTEMPT_AT, stamp(letter.first_attempt_at).as_str());
    headers.insert(h::LAST_ATTEMPT_AT, stamp(letter.last_attempt_at).as_str());

    let subject = broker.subjects.dlq(letter.tenant, letter.destination_id);
    // With traces on, the dead letter carries this span's context instead of the
    // original's, so that a replay continues the event's trace from here.
    let span = spans::publish(names::DLQ_STREAM, &subject, &msg_id, None);
    propagation::inject_nats(&span, &mut headers);
    async {
        broker
            .js
            .publish_with_headers(subject, headers, letter.body)
            .await
            .map_err(|e| BrokerError::new("publishing dead letter", e))?
            .await
            .map_err(|e| BrokerError::new("awaiting dead letter ack", e))
    }
    .instrument(span.clone())
    .await
    .inspect_err(|_| spans::record_error(&span, "publish_failed"))?;
    Ok(())
}

/// Header values cannot hold line breaks; errors are kept short.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(512)
        .collect()
}
