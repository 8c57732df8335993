//! One operational event, published as any producer publishes an event: the envelope on
//! `hs.ev.<tenant>.hookstream.…` of `HS_EVENTS` with `Nats-Msg-Id` = its id, acked by the
//! server. From there it is routed, signed, retried and dead-lettered like every event.

use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use tracing::{Instrument, debug, warn};

use crate::broker::names::{self, headers as h};
use crate::broker::{Broker, BrokerError};
use crate::model::{Envelope, EventId, EventType, TenantId};
use crate::telemetry::metrics as m;
use crate::telemetry::{propagation, spans};

/// The `source` of every operational event.
pub const SOURCE: &str = "hookstream";

/// An operational event about to be published.
#[derive(Debug)]
pub struct Notice {
    pub id: EventId,
    pub tenant: TenantId,
    /// One of [`super::TYPES`].
    pub event_type: &'static str,
    /// When what it tells of happened.
    pub occurred_at: DateTime<Utc>,
    pub data: serde_json::Value,
}

impl Notice {
    /// A notice with a fresh event id.
    pub fn new(tenant: TenantId, event_type: &'static str, data: serde_json::Value) -> Self {
        Self {
            id: EventId::generate(),
            tenant,
            event_type,
            occurred_at: Utc::now(),
            data,
        }
    }
}

/// Publishes `notice` and waits for its PubAck. A failure is logged and counted, not
/// returned: what it tells of has happened (and is stored) whether or not it is told.
pub async fn publish(broker: &Broker, notice: Notice) {
    let event_type = notice.event_type;
    let id = notice.id.clone();
    let outcome = match try_publish(broker, notice).await {
        Ok(()) => "published",
        Err(e) => {
            warn!(event_id = %id, event_type, error = %e, "operational event not published");
            "failed"
        }
    };
    metrics::counter!(m::OPERATIONAL_EVENTS, "type" => event_type, "outcome" => outcome)
        .increment(1);
}

async fn try_publish(broker: &Broker, notice: Notice) -> Result<(), BrokerError> {
    let event_type = EventType::parse(notice.event_type)
        .map_err(|e| BrokerError::new("naming an operational event", e))?;
    let data = RawValue::from_string(notice.data.to_string())
        .map_err(|e| BrokerError::new("encoding an operational event", e))?;
    let subject = broker.subjects.event(&notice.tenant, &event_type);
    let envelope = Envelope {
        id: notice.id.clone(),
        tenant: notice.tenant.clone(),
        event_type,
        source: Some(SOURCE.to_string()),
        occurred_at: Some(notice.occurred_at),
        received_at: Utc::now(),
        data,
    };
    let mut headers = HeaderMap::new();
    headers.insert(h::MSG_ID, notice.id.as_str());
    headers.insert(h::EVENT_TYPE, notice.event_type);
    headers.insert(h::TENANT, notice.tenant.as_str());
    // A child of the current span (the attempt that led to it), when traces are on.
    let span = spans::publish(
        names::EVENTS_STREAM,
        &subject,
        notice.id.as_str(),
        Some(notice.id.as_str()),
    );
    propagation::inject_nats(&span, &mut headers);
    let ack = async {
        broker
            .js
            .publish_with_headers(subject, headers, envelope.to_bytes())
            .await
            .map_err(|e| BrokerError::new("publishing an operational event", e))?
            .await
            .map_err(|e| BrokerError::new("awaiting an operational event's ack", e))
    }
    .instrument(span)
    .await?;
    debug!(event_id = %notice.id, event_type = notice.event_type, seq = ack.sequence, duplicate = ack.duplicate, "operational event published");
    Ok(())
}
