//! Ingest: validate → envelope → publish with `Nats-Msg-Id` → PubAck → remember the id.
//!
//! Idempotency has two layers. JetStream's duplicate window on `Nats-Msg-Id` catches
//! concurrent retries (an `Idempotency-Key` maps to a derived event id, so racing requests
//! publish the same id); the `hs_idempotency` bucket remembers every accepted id for the
//! configured TTL (24 h) and answers later retries without publishing. Nothing serialises
//! publishes across requests: each request awaits only its own PubAck. The record of an
//! id the API drew is written behind the 202 ([`record`], docs/adr/0020).

pub mod record;

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use tracing::Instrument;

use crate::broker::names::{self, headers as h};
use crate::broker::{Broker, BrokerError, BrokerErrorKind};
use crate::destinations::{DestinationError, DestinationStore};
use crate::flow::Flow;
use crate::model::{Envelope, EventId, NewEvent, TenantId};
use crate::telemetry::metrics as m;
use crate::telemetry::{propagation, spans};

pub use record::{AcceptedRecord, Recorder, locate};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Invalid(String),
    #[error("the event is {size} bytes as a message; NATS accepts at most {max}")]
    TooLarge { size: usize, max: usize },
    #[error("event id {0} is already used by another tenant")]
    IdConflict(String),
    /// The tenant is over its ingest limit: try again after this long.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// A batch item that was not accepted: refused before ingest by the caller's own checks
/// (`E`: not an event, another tenant's), or by ingest.
#[derive(Debug)]
pub enum BatchItemError<E> {
    Refused(E),
    Ingest(IngestError),
}

/// Items published at once in a batch; results keep the request's order.
const BATCH_IN_FLIGHT: usize = 128;

/// An item's place in a batch: wait for the previous item's publish, then let the next one
/// go (by dropping `done`). The default is a single event with nobody to wait for.
#[derive(Default)]
pub struct Turn {
    pub wait: Option<tokio::sync::oneshot::Receiver<()>>,
    pub done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Turn {
    /// Turns for `n` items, each after the one before.
    pub fn chain(n: usize) -> Vec<Turn> {
        let mut turns: Vec<Turn> = (0..n).map(|_| Turn::default()).collect();
        for i in 1..n {
            let (tx, rx) = tokio::sync::oneshot::channel();
            turns[i - 1].done = Some(tx);
            turns[i].wait = Some(rx);
        }
        turns
    }
}

/// An event's message, ready to publish to JetStream with `Nats-Msg-Id` = its id.
pub struct Outgoing {
    pub subject: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub span: tracing::Span,
    pub event_type: crate::model::EventType,
}

/// The answer for one accepted (or recognised duplicate) event.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub id: String,
    pub duplicate: bool,
}

/// W3C trace context carried from the producer's request into the message headers.
#[derive(Debug, Clone, Default)]
pub struct TraceContext {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

#[derive(Clone)]
pub struct Ingestor {
    broker: Broker,
    destinations: DestinationStore,
    flow: Arc<Flow>,
    records: Recorder,
}

impl Ingestor {
    pub fn new(broker: Broker, destinations: DestinationStore, flow: Arc<Flow>) -> Self {
        Self {
            records: Recorder::new(broker.clone()),
            broker,
            destinations,
            flow,
        }
    }

    /// Waits (at most `within`) for the lookup records still being written behind their
    /// 202s; false if some are not stored yet. For a stopping service.
    pub async fn records_settled(&self, within: Duration) -> bool {
        self.records.settled(within).await
    }

    pub async fn ingest(
        &self,
        event: NewEvent,
        idempotency_key: Option<&str>,
        trace: &TraceContext,
    ) -> Result<Accepted, IngestError> {
        self.ingest_in_turn(event, idempotency_key, trace, Turn::default())
            .await
    }

    /// Like [`Ingestor::ingest`], publishing only after the previous item of a batch has
    /// published (its `Turn`), so that a batch's events are stored in its order while
    /// their checks and acknowledgements overlap.
    pub async fn ingest_in_turn(
        &self,
        event: NewEvent,
        idempotency_key: Option<&str>,
        trace: &TraceContext,
        mut turn: Turn,
    ) -> Result<Accepted, IngestError> {
        let tenant = event.tenant.clone().unwrap_or_default();
        let (id, generated) = match (&event.id, idempotency_key) {
            (Some(id), _) => (id.clone(), false),
            (None, Some(key)) => (EventId::from_idempotency_key(&tenant, key), false),
            (None, None) => (EventId::generate(), true),
        };
        let subject = self.subject(&tenant, &event).await?;

        let key = names::idempotency_key(&id);
        // An id drawn here (a ULID: 80 random bits per millisecond) was never accepted
        // before, so there is nothing to recall: one round trip fewer (docs/adr/0017).
        let previous = if generated {
            None
        } else {
            record::read(&self.broker, &key).await?
        };
        if let Some(previous) = previous {
            if previous.tenant != tenant.as_str() {
                return Err(IngestError::IdConflict(id.to_string()));
            }
            metrics::counter!(m::INGEST_DUPLICATES).increment(1);
            return Ok(Accepted {
                id: id.to_string(),
                duplicate: true,
            });
        }

        // Routing (docs/adr/0010): a full delivery shard stops routing; refuse rather than
        // accept events that would only wait.
        self.broker.check_delivery_room()?;

        // After the duplicate check: a repeat publishes nothing and costs no quota.
        if let Err(wait) = self.flow.admit_tenant(tenant.as_str(), 1).await? {
            metrics::counter!(m::TENANT_RATE_LIMITED).increment(1);
            return Err(IngestError::RateLimited {
                message: format!("tenant {tenant} is over its ingest rate limit; retry later"),
                retry_after: wait,
            });
        }
        let Outgoing {
            subject,
            mut headers,
            body,
            span,
            event_type,
        } = self.message(&id, &tenant, event, subject, trace)?;
        // This path writes the lookup record below; the router need not.
        headers.insert(h::RECORDED, "api");
        let ack = async {
            if let Some(previous) = turn.wait.take() {
                // Sent or given up: either way it is this item's turn (a closed channel
                // means the previous item ended before publishing).
                let _ = previous.await;
            }
            let sent = self
                .broker
                .js
                .publish_with_headers(subject, headers, body)
                .await
                .map_err(|e| BrokerError::new("publishing event", e))?;
            // Written to the connection: the next item may publish behind it.
            drop(turn.done.take());
            sent.await
                .map_err(|e| BrokerError::new("awaiting event ack", e))
        }
        .instrument(span.clone())
        .await
        .inspect_err(|_| spans::record_error(&span, "publish_failed"))?;
        if !ack.duplicate {
            metrics::counter!(m::EVENTS_INGESTED, "via" => "http").increment(1);
        }
        // Written for a duplicate too: the first try may have stopped between its PubAck
        // and this write, and the router leaves the record to this path (`Hs-Recorded`).
        // The PubAck of a duplicate names the first copy's sequence.
        let record = AcceptedRecord {
            tenant: tenant.to_string(),
            seq: ack.sequence,
            event_type: event_type.to_string(),
        };
        if generated {
            // Nobody can retry with an id drawn here, nor know it before this answer:
            // the record need not be stored before the 202 (docs/adr/0020).
            self.records.write_behind(key, &record).await;
        } else {
            // A client that named the id may read it at once: stored before the 202.
            self.records.write(&key, &record).await;
        }
        if ack.duplicate {
            metrics::counter!(m::INGEST_DUPLICATES).increment(1);
        }
        Ok(Accepted {
            id: id.to_string(),
            duplicate: ack.duplicate,
        })
    }

    /// Ingests a batch of 1 to `max` items, each accepted or refused on its own, in the
    /// batch's order: each item publishes after the one before it (an ordered destination
    /// then gets the batch in that order), while checks and acks overlap. `prepare` turns
    /// an item into an event or refuses it. A batch-level key makes each item's key
    /// `<key>/<index>`.
    ///
    /// When NATS is down or the stream full and no item was stored, the batch as a whole
    /// is refused with that error: a client retries it whole, as it would a single event,
    /// instead of finding a 200 whose every item failed.
    pub async fn ingest_batch<I, E>(
        &self,
        items: Vec<I>,
        max: usize,
        idempotency_key: Option<&str>,
        trace: &TraceContext,
        prepare: impl Fn(I) -> Result<NewEvent, E>,
    ) -> Result<Vec<Result<Accepted, BatchItemError<E>>>, IngestError> {
        use futures::StreamExt;
        if items.is_empty() || items.len() > max {
            return Err(IngestError::Invalid(format!(
                "a batch holds 1 to {max} events"
            )));
        }
        let turns = Turn::chain(items.len());
        let mut outcomes: Vec<Result<Accepted, BatchItemError<E>>> =
            futures::stream::iter(items.into_iter().zip(turns).enumerate())
                .map(|(i, (item, turn))| {
                    let prepared = prepare(item);
                    let item_key = idempotency_key.map(|k| format!("{k}/{i}"));
                    async move {
                        let event = prepared.map_err(BatchItemError::Refused)?;
                        self.ingest_in_turn(event, item_key.as_deref(), trace, turn)
                            .await
                            .map_err(BatchItemError::Ingest)
                    }
                })
                .buffered(BATCH_IN_FLIGHT)
                .collect()
                .await;
        if outcomes.iter().any(Result::is_ok) {
            return Ok(outcomes);
        }
        let broker_refused = outcomes.iter().position(|o| {
            matches!(o, Err(BatchItemError::Ingest(IngestError::Broker(b)))
                if matches!(b.kind, BrokerErrorKind::Unavailable | BrokerErrorKind::StorageFull))
        });
        match broker_refused.map(|i| outcomes.swap_remove(i)) {
            Some(Err(BatchItemError::Ingest(e))) => Err(e),
            _ => Ok(outcomes),
        }
    }

    /// Where an event goes, after the checks that need no id: its source, and that a
    /// destination it names belongs to its tenant. Shared with file ingest.
    pub async fn subject(
        &self,
        tenant: &TenantId,
        event: &NewEvent,
    ) -> Result<String, IngestError> {
        if event.source.as_ref().is_some_and(|s| s.len() > 1024) {
            return Err(IngestError::Invalid("source is at most 1024 bytes".into()));
        }
        Ok(match &event.destination_id {
            Some(dest) => {
                let found = self.destinations.get(dest).await.map_err(|e| match e {
                    DestinationError::Broker(b) => IngestError::Broker(b),
                    other => IngestError::Invalid(other.to_string()),
                })?;
                match found {
                    Some((d, _)) if d.tenant == *tenant => {
                        self.broker.subjects.directed(dest, &event.event_type)
                    }
                    _ => {
                        return Err(IngestError::Invalid(format!(
                            "destination_id {dest} is not a destination of tenant {tenant}"
                        )));
                    }
                }
            }
            None => self.broker.subjects.event(tenant, &event.event_type),
        })
    }

    /// Takes `events` from the tenant's ingest limit (all replicas together); `Err(wait)`
    /// when over it. File ingest asks once per batch of lines.
    pub async fn admit(
        &self,
        tenant: &TenantId,
        events: u32,
    ) -> Result<Result<(), Duration>, IngestError> {
        Ok(self.flow.admit_tenant(tenant.as_str(), events).await?)
    }

    /// The message of an accepted event: envelope, headers, the size check and the
    /// publish span. Shared with file ingest, which publishes many of them at once.
    pub fn message(
        &self,
        id: &EventId,
        tenant: &TenantId,
        event: NewEvent,
        subject: String,
        trace: &TraceContext,
    ) -> Result<Outgoing, IngestError> {
        let envelope = Envelope {
            id: id.clone(),
            tenant: tenant.clone(),
            event_type: event.event_type.clone(),
            source: event.source,
            occurred_at: event.occurred_at,
            received_at: Utc::now(),
            data: event.data,
        };
        let mut headers = HeaderMap::new();
        headers.insert(h::MSG_ID, id.as_str());
        headers.insert(h::EVENT_TYPE, envelope.event_type.as_str());
        headers.insert(h::TENANT, tenant.as_str());
        if let Some(tp) = &trace.traceparent {
            headers.insert(h::TRACEPARENT, tp.as_str());
        }
        if let Some(ts) = &trace.tracestate {
            headers.insert(h::TRACESTATE, ts.as_str());
        }
        let body = envelope.to_bytes();
        // Headers and protocol overhead stay well under 1 KiB.
        let max = self.broker.client.server_info().max_payload;
        if body.len() + 1024 > max {
            return Err(IngestError::TooLarge {
                size: body.len(),
                max,
            });
        }
        // With traces on, the message carries the publish span's context (a child of the
        // request's); off, the request's own traceparent travels on unchanged.
        let span = spans::publish(
            names::EVENTS_STREAM,
            &subject,
            id.as_str(),
            Some(id.as_str()),
        );
        propagation::inject_nats(&span, &mut headers);
        Ok(Outgoing {
            subject,
            headers,
            body,
            span,
            event_type: envelope.event_type,
        })
    }
}

pub type SharedIngestor = Arc<Ingestor>;
