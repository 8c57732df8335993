//! Resend: an event still on `HS_EVENTS` (delivered or not) is published again, to
//! `hs.to.<destination_id>.<type>` for each destination it goes to, with its original
//! body (same `webhook-id`) and headers (trace context included) plus
//! `Hs-Resend-Of: <its HS_EVENTS sequence>`. Each resend is a new message with a fresh
//! attempt budget; every request sends again (its `Nats-Msg-Id` is unique).
//!
//! Without a destination, the event goes again to every destination it was attempted
//! at (its attempt records say which) that still exists; with one, to that destination,
//! which must belong to the event's tenant. With a tenant (a tenant key's), an event of
//! another tenant is not found.

use std::collections::BTreeSet;

use async_nats::jetstream::stream::DirectGetErrorKind;
use tracing::{Instrument, info};

use super::DlqError;
use super::letter::carried_headers;
use crate::broker::names::{self, headers as h};
use crate::broker::{Broker, BrokerError};
use crate::destinations::DestinationStore;
use crate::history;
use crate::model::{DestinationId, Envelope, EventId, TenantId};
use crate::telemetry::metrics as m;
use crate::telemetry::{propagation, spans};

/// One message published by a resend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resent {
    pub destination_id: String,
    /// Its sequence on `HS_EVENTS`.
    pub stream_seq: u64,
}

pub async fn resend(
    broker: &Broker,
    store: &DestinationStore,
    event_id: &EventId,
    tenant: Option<&TenantId>,
    destination: Option<&DestinationId>,
) -> Result<Vec<Resent>, DlqError> {
    let not_found = || DlqError::NotFound(format!("event {event_id} not found"));
    // Another tenant's event is not found either: nothing tells it exists.
    let stored = history::find_event(broker, event_id)
        .await?
        .filter(|s| tenant.is_none_or(|t| t.as_str() == s.tenant))
        .ok_or_else(not_found)?;
    let message = match broker.events.direct_get(stored.seq).await {
        Ok(message) => message,
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => {
            return Err(DlqError::Gone(format!(
                "event {event_id} is no longer on HS_EVENTS (retention, events.max_age_secs); \
                 it cannot be sent again"
            )));
        }
        Err(e) => return Err(BrokerError::new("reading the event", e).into()),
    };
    let envelope: Envelope = serde_json::from_slice(&message.payload).map_err(|e| {
        DlqError::Conflict(format!(
            "event {event_id} on HS_EVENTS is not a valid envelope ({e}); it cannot be sent again"
        ))
    })?;

    let targets: Vec<DestinationId> = match destination {
        Some(id) => {
            let found = store.get(id).await?;
            match found {
                Some((d, _)) if d.tenant == envelope.tenant => {
                    if !d.enabled {
                        return Err(DlqError::DestinationDisabled(format!(
                            "destination {id} is disabled; enable it before resending to it"
                        )));
                    }
                    vec![id.clone()]
                }
                _ => {
                    return Err(DlqError::NotFound(format!(
                        "destination {id} is not a destination of tenant {}",
                        envelope.tenant
                    )));
                }
            }
        }
        None => {
            let attempted: BTreeSet<String> =
                history::attempts_of(broker, envelope.tenant.as_str(), event_id)
                    .await?
                    .into_iter()
                    .map(|a| a.destination_id)
                    .collect();
            let mut targets = Vec::new();
            for id in attempted {
                let Ok(id) = DestinationId::parse(id) else {
                    continue;
                };
                // Gone or disabled since: skipped (name it to be told why).
                if let Some((d, _)) = store.get(&id).await?
                    && d.enabled
                    && d.tenant == envelope.tenant
                {
                    targets.push(id);
                }
            }
            if targets.is_empty() {
                return Err(DlqError::Conflict(format!(
                    "event {event_id} has not been sent to any destination that still exists \
                     and is enabled; name a destination_id to send it to"
                )));
            }
            targets
        }
    };

    let mut headers = carried_headers(&message.headers);
    headers.insert(h::RESEND_OF, stored.seq.to_string().as_str());
    let mut resent = Vec::with_capacity(targets.len());
    for id in targets {
        let mut headers = headers.clone();
        let msg_id = names::resend_msg_id();
        headers.insert(h::MSG_ID, msg_id.as_str());
        let subject = broker.subjects.directed(&id, &envelope.event_type);
        let span = spans::republish(
            names::EVENTS_STREAM,
            &subject,
            &msg_id,
            event_id.as_str(),
            &message.headers,
            "resend",
        );
        propagation::inject_nats(&span, &mut headers);
        let ack = broker
            .js
            .publish_with_headers(subject, headers, message.payload.clone())
            .instrument(span)
            .await
            .map_err(|e| BrokerError::new("resending an event", e))?
            .await
            .map_err(|e| BrokerError::new("awaiting a resend's ack", e))?;
        info!(event_id = %event_id, destination_id = %id, stream_seq = ack.sequence, "event resent");
        metrics::counter!(m::EVENTS_RESENT).increment(1);
        resent.push(Resent {
            destination_id: id.to_string(),
            stream_seq: ack.sequence,
        });
    }
    Ok(resent)
}
