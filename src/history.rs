//! Delivery history: finding an accepted event, and the one owner of attempt records on
//! `HS_ATTEMPTS` (stored by the worker, read by the worker to count attempts, ADR 0002,
//! and by the API).

use std::collections::BTreeMap;

use async_nats::jetstream::stream::DirectGetErrorKind;

use crate::broker::{Broker, BrokerError};
use crate::ingest;
use crate::model::{AttemptRecord, EventId};

/// Attempts read for one event at most (a safety bound for the API).
const MAX_ATTEMPTS_READ: usize = 10_000;

/// An event as stored on `HS_EVENTS`.
pub struct StoredEvent {
    pub tenant: String,
    pub seq: u64,
    /// The envelope JSON, or `None` when retention removed the message already.
    pub envelope: Option<serde_json::Value>,
    /// The destination of a directed event (`hs.to.<id>.…`).
    pub directed_to: Option<String>,
    /// When the stream stored it: destinations created later never receive it.
    pub stored_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Finds an event by id: through its idempotency record, or (for events published
/// directly on NATS) through its attempt records.
pub async fn find_event(broker: &Broker, id: &EventId) -> Result<Option<StoredEvent>, BrokerError> {
    let located = match ingest::locate(broker, id).await? {
        Some(rec) => Some((rec.tenant, rec.seq)),
        None => {
            let subject = broker.subjects.attempts_of_event_any_tenant(id);
            match first_attempt_matching(broker, &subject).await? {
                Some(rec) => Some((rec.tenant, rec.stream_seq)),
                None => None,
            }
        }
    };
    let Some((tenant, seq)) = located else {
        return Ok(None);
    };
    let (envelope, directed_to, stored_at) = match broker.events.direct_get(seq).await {
        Ok(msg) => {
            let stored_at =
                chrono::DateTime::from_timestamp_nanos(msg.time.unix_timestamp_nanos() as i64);
            let directed = match broker.subjects.parse_event_subject(msg.subject.as_str()) {
                Some(crate::broker::names::EventSubject::Directed { destination, .. }) => {
                    Some(destination.to_string())
                }
                _ => None,
            };
            (
                serde_json::from_slice(&msg.payload).ok(),
                directed,
                Some(stored_at),
            )
        }
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => (None, None, None),
        Err(e) => return Err(BrokerError::new("reading event", e)),
    };
    Ok(Some(StoredEvent {
        tenant,
        seq,
        envelope,
        directed_to,
        stored_at,
    }))
}

impl StoredEvent {
    /// The event's type, from its envelope.
    pub fn event_type(&self) -> Option<&str> {
        self.envelope.as_ref()?.get("type")?.as_str()
    }
}

/// The oldest attempt record on subjects matching `subject`.
async fn first_attempt_matching(
    broker: &Broker,
    subject: &str,
) -> Result<Option<AttemptRecord>, BrokerError> {
    match broker
        .attempts
        .direct_get_next_for_subject(subject, None)
        .await
    {
        Ok(msg) => Ok(serde_json::from_slice(&msg.payload).ok()),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(BrokerError::new("reading attempts", e)),
    }
}

/// Every attempt record of an event, oldest first.
pub async fn attempts_of(
    broker: &Broker,
    tenant: &str,
    id: &EventId,
) -> Result<Vec<AttemptRecord>, BrokerError> {
    let subject = broker.subjects.attempts_of_event(tenant, id);
    let mut out = Vec::new();
    let mut next = 1u64;
    while out.len() < MAX_ATTEMPTS_READ {
        match broker
            .attempts
            .direct_get_next_for_subject(subject.as_str(), Some(next))
            .await
        {
            Ok(msg) => {
                next = msg.sequence + 1;
                if let Ok(record) = serde_json::from_slice(&msg.payload) {
                    out.push(record);
                }
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
            Err(e) => return Err(BrokerError::new("reading attempts", e)),
        }
    }
    Ok(out)
}

/// Attempt records (oldest first) per destination, each list oldest first.
pub fn by_destination(records: &[AttemptRecord]) -> BTreeMap<String, Vec<AttemptRecord>> {
    let mut per_destination: BTreeMap<String, Vec<AttemptRecord>> = BTreeMap::new();
    for record in records {
        per_destination
            .entry(record.destination_id.clone())
            .or_default()
            .push(record.clone());
    }
    per_destination
}

/// Stores an attempt record. A success record is history only (nothing counts from it),
/// so it is published without waiting for the stream's ack, saving a round trip per
/// delivery; the others are awaited: the next attempt counts from them.
pub async fn store_attempt(broker: &Broker, record: &AttemptRecord) -> Result<(), BrokerError> {
    let subject = broker
        .subjects
        .attempt(&record.tenant, &record.event_id, &record.destination_id);
    let payload: bytes::Bytes = serde_json::to_vec(record)
        .expect("attempt record serialises")
        .into();
    if record.outcome == crate::model::AttemptOutcome::Delivered {
        return broker
            .client
            .publish(subject, payload)
            .await
            .map_err(|e| BrokerError::new("publishing attempt record", e));
    }
    broker
        .js
        .publish(subject, payload)
        .await
        .map_err(|e| BrokerError::new("publishing attempt record", e))?
        .await
        .map(drop)
        .map_err(|e| BrokerError::new("awaiting attempt record ack", e))
}

/// Which attempt record of an (event, destination) pair to read.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    First,
    Last,
}

/// The first or last attempt record of (event, destination), if it can be read.
pub async fn attempt_of(
    broker: &Broker,
    which: Which,
    tenant: &str,
    event: &str,
    destination: &str,
) -> Option<AttemptRecord> {
    let subject = broker.subjects.attempt(tenant, event, destination);
    match which {
        Which::First => first_attempt_matching(broker, &subject)
            .await
            .ok()
            .flatten(),
        Which::Last => {
            let msg = broker
                .attempts
                .direct_get_last_for_subject(subject)
                .await
                .ok()?;
            serde_json::from_slice(&msg.payload).ok()
        }
    }
}
