//! The stored dead letter, the noun every other part of `dlq/` works on: decoded from
//! the subject and headers that `publish` wrote and from the event envelope in its body;
//! anything missing (a message written by another tool, a body that is not an envelope)
//! is shown as absent, never an error. Also one dead letter read by id, and the headers
//! a re-publish (replay, resend) carries on from a stored message.

use async_nats::HeaderMap;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::DirectGetErrorKind;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::DlqError;
use crate::broker::names::{Subjects, headers as h};
use crate::broker::{Broker, BrokerError};

/// A dead letter as `HS_DLQ` holds it.
#[derive(Debug, Clone)]
pub struct StoredDeadLetter {
    /// Its id: the sequence on `HS_DLQ`.
    pub seq: u64,
    pub tenant: String,
    pub destination_id: String,
    /// From the envelope in the body; `None` when the body is not an envelope.
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub reason: Option<String>,
    pub attempts: Option<u32>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When `HS_DLQ` stored it; the time range filters apply to this.
    pub dead_lettered_at: DateTime<Utc>,
    /// Sequence of the failed message on `HS_EVENTS`.
    pub original_seq: Option<u64>,
    /// Set when the failed message was itself a replay of an earlier dead letter.
    pub replay_of: Option<u64>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The few envelope fields a listing shows; the rest of the body is not parsed.
#[derive(Deserialize)]
struct EnvelopeHead {
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
}

impl StoredDeadLetter {
    /// `None` for a message whose subject is not a dead-letter subject (another tool
    /// published under `hs.dlq.` with more tokens): it is skipped, not shown.
    pub fn from_message(subjects: &Subjects, message: StreamMessage) -> Option<Self> {
        let (tenant, destination) = subjects.parse_dlq_subject(message.subject.as_str())?;
        let (tenant, destination_id) = (tenant.to_string(), destination.to_string());
        let text = |name: &str| {
            message
                .headers
                .get(name)
                .map(|v| v.as_str().to_string())
                .filter(|v| !v.is_empty())
        };
        let time = |name: &str| text(name).and_then(|v| DateTime::parse_from_rfc3339(&v).ok());
        let head: Option<EnvelopeHead> = serde_json::from_slice(&message.payload).ok();
        let (event_id, body_type) = head.map_or((None, None), |e| (e.id, e.event_type));
        Some(Self {
            seq: message.sequence,
            event_id,
            event_type: text(h::EVENT_TYPE).or(body_type),
            reason: text(h::DLQ_REASON),
            attempts: text(h::ATTEMPTS).and_then(|v| v.parse().ok()),
            last_status: text(h::LAST_STATUS).and_then(|v| v.parse().ok()),
            last_error: text(h::LAST_ERROR),
            first_attempt_at: time(h::FIRST_ATTEMPT_AT).map(|t| t.to_utc()),
            last_attempt_at: time(h::LAST_ATTEMPT_AT).map(|t| t.to_utc()),
            dead_lettered_at: stored_at(&message),
            original_seq: text(h::ORIGINAL_SEQ).and_then(|v| v.parse().ok()),
            replay_of: text(h::REPLAY_OF).and_then(|v| v.parse().ok()),
            tenant,
            destination_id,
            headers: message.headers,
            body: message.payload,
        })
    }
}

/// One dead letter by id, or `None` when there is none (never was, replayed, purged).
pub async fn get(broker: &Broker, seq: u64) -> Result<Option<StoredDeadLetter>, DlqError> {
    if seq == 0 {
        return Ok(None);
    }
    match broker.dlq.direct_get(seq).await {
        Ok(message) => Ok(StoredDeadLetter::from_message(&broker.subjects, message)),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(BrokerError::new("reading a dead letter", e).into()),
    }
}

/// When `HS_DLQ` stored the message.
pub fn stored_at(message: &StreamMessage) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(message.time.unix_timestamp_nanos() as i64)
}

/// The headers of a stored message that travel on with a re-publish: everything but
/// JetStream's own (`Nats-*`) and the dead letter's.
pub fn carried_headers(original: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, values) in original.iter() {
        let text: &str = name.as_ref();
        if h::is_jetstream_header(text)
            || h::is_copy_local(text)
            || h::DEAD_LETTER_ONLY
                .iter()
                .any(|d| d.eq_ignore_ascii_case(text))
        {
            continue;
        }
        for value in values {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(subject: &str, headers: &[(&str, &str)], body: &str) -> StreamMessage {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, *value);
        }
        StreamMessage {
            subject: subject.into(),
            sequence: 7,
            headers: map,
            payload: Bytes::copy_from_slice(body.as_bytes()),
            time: time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        }
    }

    #[test]
    fn a_dead_letter_is_decoded_from_subject_headers_and_envelope() {
        let subjects = Subjects::new("hs");
        let letter = StoredDeadLetter::from_message(
            &subjects,
            message(
                "hs.dlq.acme.d1",
                &[
                    ("Hs-Event-Type", "order.created"),
                    ("Hs-Dlq-Reason", "max_attempts"),
                    ("Hs-Attempts", "3"),
                    ("Hs-Last-Status", "500"),
                    ("Hs-Last-Error", "HTTP 500"),
                    ("Hs-Original-Seq", "42"),
                    ("Hs-First-Attempt-At", "2026-01-01T00:00:00+00:00"),
                    ("Hs-Last-Attempt-At", ""),
                ],
                r#"{"id":"evt_1","tenant":"acme","type":"order.created","data":{}}"#,
            ),
        )
        .expect("a dead-letter subject");
        assert_eq!(letter.seq, 7);
        assert_eq!(
            (letter.tenant.as_str(), letter.destination_id.as_str()),
            ("acme", "d1")
        );
        assert_eq!(letter.event_id.as_deref(), Some("evt_1"));
        assert_eq!(letter.event_type.as_deref(), Some("order.created"));
        assert_eq!(letter.reason.as_deref(), Some("max_attempts"));
        assert_eq!((letter.attempts, letter.last_status), (Some(3), Some(500)));
        assert_eq!(letter.original_seq, Some(42));
        assert!(letter.first_attempt_at.is_some());
        assert_eq!(letter.last_attempt_at, None, "empty header = absent");
        assert_eq!(letter.dead_lettered_at.timestamp(), 1_700_000_000);
    }

    #[test]
    fn a_malformed_body_leaves_the_event_fields_absent() {
        let subjects = Subjects::new("hs");
        let letter =
            StoredDeadLetter::from_message(&subjects, message("hs.dlq.acme.d1", &[], "not json"))
                .unwrap();
        assert_eq!((letter.event_id, letter.event_type), (None, None));
        assert!(
            StoredDeadLetter::from_message(&subjects, message("hs.dlq.a.b.c", &[], "")).is_none()
        );
    }
}
