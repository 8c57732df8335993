//! The delivery status of an event at each destination: which destinations want it, and
//! the last attempt record of each (event, destination) pair.
//!
//! The last attempts of a whole page of events come from one `multi_last` direct get
//! over `hs.att.<tenant>.<event>.*` (the server keeps the last message of each subject
//! in its index), not from reading every attempt.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::broker::names::ATTEMPTS_STREAM;
use crate::broker::{Broker, BrokerError, direct};
use crate::destinations::Registry;
use crate::destinations::{DestinationError, DestinationStore};
use crate::flow::Flow;
use crate::flow::circuit::Gate;
use crate::history::{self, StoredEvent};
use crate::model::{AttemptRecord, DeliveryStatus, EventId, TenantId};

/// Events whose last attempts are asked for in one request (each may have several
/// destinations; the server answers at most 1024 subjects).
const EVENTS_PER_REQUEST: usize = 32;

/// One (event, destination) pair.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    pub destination_id: String,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<AttemptRecord>,
}

/// What an event is, for finding its deliveries.
pub struct EventRef<'a> {
    pub tenant: &'a str,
    pub id: &'a str,
    pub event_type: Option<&'a str>,
    /// `hs.to.<destination>.…`: for that destination only.
    pub directed_to: Option<&'a str>,
    pub stored_at: Option<DateTime<Utc>>,
}

impl<'a> EventRef<'a> {
    /// The stored event as the delivery status look-up needs it.
    pub fn of(stored: &'a StoredEvent, id: &'a str) -> Self {
        Self {
            tenant: &stored.tenant,
            id,
            event_type: stored.event_type(),
            directed_to: stored.directed_to.as_deref(),
            stored_at: stored.stored_at,
        }
    }
}

/// An event as stored, every attempt made for it (oldest first) and its delivery status
/// per destination: what `GET /v1/events/{id}` and the console's event page show.
pub struct EventDetail {
    pub stored: StoredEvent,
    pub attempts: Vec<AttemptRecord>,
    pub deliveries: Vec<Delivery>,
}

/// Everything needed to tell a delivery's status; borrowed from the API's state.
#[derive(Clone, Copy)]
pub struct Deliveries<'a> {
    pub broker: &'a Broker,
    pub flow: &'a Flow,
    /// The worker's view of the destinations, when this process runs one.
    pub registry: Option<&'a Registry>,
    pub destinations: &'a DestinationStore,
}

impl Deliveries<'_> {
    /// The status after `last`: a delivery waiting for its next attempt behind an open
    /// circuit is held back, and the wait uses up no attempt (contract: `throttled`).
    pub fn status(&self, destination_id: &str, last: Option<&AttemptRecord>) -> DeliveryStatus {
        match DeliveryStatus::from_last_attempt(last) {
            DeliveryStatus::Retrying if self.flow.circuits.gate(destination_id) != Gate::Closed => {
                DeliveryStatus::Throttled
            }
            other => other,
        }
    }

    /// The event and its deliveries, if it exists and `visible` lets its tenant be seen
    /// (a key's scope: another tenant's event is not found either).
    pub async fn event(
        &self,
        id: &EventId,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Option<EventDetail>, DestinationError> {
        let Some(stored) = history::find_event(self.broker, id)
            .await?
            .filter(|s| visible(&s.tenant))
        else {
            return Ok(None);
        };
        let attempts = history::attempts_of(self.broker, &stored.tenant, id).await?;
        let deliveries = self
            .of_event(&EventRef::of(&stored, id.as_str()), attempts.clone())
            .await?;
        Ok(Some(EventDetail {
            stored,
            attempts,
            deliveries,
        }))
    }

    /// One delivery per destination: those with attempts (`records`, oldest first, any
    /// destination) and those that want the event and have none yet (pending).
    pub async fn of_event(
        &self,
        event: &EventRef<'_>,
        records: Vec<AttemptRecord>,
    ) -> Result<Vec<Delivery>, DestinationError> {
        let mut last: BTreeMap<String, AttemptRecord> = BTreeMap::new();
        for record in records {
            last.insert(record.destination_id.clone(), record);
        }
        let wanting = self.wanting(event).await?;
        Ok(self.merge(last, wanting))
    }

    fn merge(
        &self,
        mut last: BTreeMap<String, AttemptRecord>,
        wanting: Vec<String>,
    ) -> Vec<Delivery> {
        let mut per_destination: BTreeMap<String, Option<AttemptRecord>> = BTreeMap::new();
        for dest in wanting {
            per_destination.insert(dest, None);
        }
        for (dest, record) in std::mem::take(&mut last) {
            per_destination.insert(dest, Some(record));
        }
        per_destination
            .into_iter()
            .map(|(destination_id, last)| Delivery {
                status: self.status(&destination_id, last.as_ref()),
                attempts: last.as_ref().map_or(0, |a| a.attempt),
                destination_id,
                last_attempt: last,
            })
            .collect()
    }

    /// Deliveries of many events of one search page, keyed by event id. `only`: one
    /// destination's deliveries. Without a worker in this process, destinations that
    /// have made no attempt yet are known only for directed events.
    pub async fn of_events(
        &self,
        events: &[EventRef<'_>],
        only: Option<&str>,
    ) -> Result<HashMap<String, Vec<Delivery>>, DestinationError> {
        let mut last = self.last_attempts(events, only).await?;
        let mut out = HashMap::with_capacity(events.len());
        for event in events {
            let records = last.remove(event.id).unwrap_or_default();
            let mut wanting = match self.registry {
                Some(_) => self.wanting(event).await?,
                None => event.directed_to.map(String::from).into_iter().collect(),
            };
            if let Some(only) = only {
                wanting.retain(|d| d == only);
            }
            out.insert(event.id.to_string(), self.merge(records, wanting));
        }
        Ok(out)
    }

    /// The last attempt record of each (event, destination) pair, by event id.
    async fn last_attempts(
        &self,
        events: &[EventRef<'_>],
        only: Option<&str>,
    ) -> Result<HashMap<String, BTreeMap<String, AttemptRecord>>, BrokerError> {
        let mut out: HashMap<String, BTreeMap<String, AttemptRecord>> = HashMap::new();
        let mut pending: Vec<&[EventRef<'_>]> = events.chunks(EVENTS_PER_REQUEST).collect();
        while let Some(chunk) = pending.pop() {
            let filters: Vec<String> = chunk
                .iter()
                .map(|e| {
                    self.broker
                        .subjects
                        .attempt(e.tenant, e.id, only.unwrap_or("*"))
                })
                .collect();
            match direct::last_per_subject(self.broker, ATTEMPTS_STREAM, &filters, None).await {
                Ok(messages) => {
                    for message in messages {
                        if let Ok(record) =
                            serde_json::from_slice::<AttemptRecord>(&message.payload)
                        {
                            out.entry(record.event_id.clone())
                                .or_default()
                                .insert(record.destination_id.clone(), record);
                        }
                    }
                }
                // More than 1024 pairs in this chunk: ask for halves.
                Err(e) if direct::is_too_many(&e) && chunk.len() > 1 => {
                    let (a, b) = chunk.split_at(chunk.len() / 2);
                    pending.push(a);
                    pending.push(b);
                }
                Err(e) if direct::is_too_many(&e) => {
                    // One event with more than 1024 destinations: read its attempts.
                    let id = crate::model::EventId::parse(chunk[0].id).map_err(|e| {
                        BrokerError::with_kind(
                            crate::broker::BrokerErrorKind::Other,
                            "reading attempts",
                            e,
                        )
                    })?;
                    for record in history::attempts_of(self.broker, chunk[0].tenant, &id)
                        .await?
                        .into_iter()
                        .filter(|r| only.is_none_or(|d| d == r.destination_id))
                    {
                        out.entry(record.event_id.clone())
                            .or_default()
                            .insert(record.destination_id.clone(), record);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Destinations that want the event: the one it is directed to, or those of its
    /// tenant whose patterns match its type and that existed when it was stored.
    pub async fn wanting(&self, event: &EventRef<'_>) -> Result<Vec<String>, DestinationError> {
        if let Some(dest) = event.directed_to {
            return Ok(vec![dest.to_string()]);
        }
        let Some(event_type) = event.event_type else {
            return Ok(Vec::new());
        };
        // A destination created after the event was stored never receives it.
        let existed = |created: DateTime<Utc>| event.stored_at.is_none_or(|t| created <= t);
        if let Some(registry) = self.registry {
            return Ok(registry
                .matching(event.tenant, event_type)
                .iter()
                .filter(|id| registry.get(id).is_some_and(|d| existed(d.created_at)))
                .map(|d| d.to_string())
                .collect());
        }
        let tenant = TenantId::parse(event.tenant).map_err(|e| {
            DestinationError::Broker(BrokerError::with_kind(
                crate::broker::BrokerErrorKind::Other,
                "reading destinations",
                e,
            ))
        })?;
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = self
                .destinations
                .list(Some(&tenant), cursor.as_deref(), 1000)
                .await?;
            out.extend(
                page.iter()
                    .filter(|d| d.accepts(event_type) && existed(d.created_at))
                    .map(|d| d.id.to_string()),
            );
            match next {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }
}
