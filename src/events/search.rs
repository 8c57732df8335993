//! Event search: events of `HS_EVENTS`, newest first, filtered by tenant, type pattern,
//! time range, destination and delivery status, in pages with a cursor.
//!
//! It reads the stream through its own indexes, never from the beginning:
//! - tenant and type narrow the **subject filter** (`hs.ev.<tenant|*>.<pattern|>>`, and
//!   `hs.to.<destination|*>.<pattern|>>` for directed events), so the server skips the
//!   rest with its per-block subject index;
//! - `since` and `until` become sequences with the server's **time index**
//!   (`start_time` direct gets), two requests per page;
//! - newest first reads **backwards from a sequence** (`broker/backward.rs`): windows
//!   of sequences from the cursor down, each read forwards in **batch direct gets** and
//!   handed out in reverse; a search without tenant, type or destination reads one
//!   filter, `>`, which the server counts from block totals (ADR 0016);
//! - the delivery status of a page's events comes from one `multi_last` direct get
//!   over their attempt subjects (`deliveries.rs`).
//!
//! A page looks at no more than [`BUDGET`] events: with a status filter that few events
//! match, it can come back short (even empty) with a cursor to go on.
//!
//! Replays and resends (messages with `Hs-Replay-Of` / `Hs-Resend-Of`) are deliveries of
//! an event already listed, not events, and are left out; so are messages that are not
//! an event envelope and those whose tenant does not match their subject (both are
//! dead-lettered, `malformed_event` / `tenant_mismatch`).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::deliveries::{Deliveries, Delivery, EventRef};
use crate::broker::backward::{Walker, next_newest};
use crate::broker::direct::{self, StoredMessage};
use crate::broker::names::{EVENTS_STREAM, EventSubject, headers};
use crate::broker::{Broker, BrokerError};
use crate::destinations::DestinationError;
use crate::model::{DeliveryStatus, Destination, EventPattern, TenantId};

/// Events looked at for one page at most.
pub const BUDGET: usize = 20_000;
/// A destination with more patterns is searched through one `hs.ev.<tenant>.>` filter.
const MAX_PATTERN_FILTERS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// The filters of a search. Every field narrows; none means every event.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub tenant: Option<TenantId>,
    pub event_type: Option<EventPattern>,
    /// Stored at or after.
    pub since: Option<DateTime<Utc>>,
    /// Stored at or before.
    pub until: Option<DateTime<Utc>>,
    /// Events for this destination (the caller looked it up, within the tenant).
    pub destination: Option<Destination>,
    /// Events with at least one delivery in this status (at `destination`, when given).
    pub status: Option<DeliveryStatus>,
}

/// Where the next page starts: the events stored below this sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub u64);

impl Cursor {
    pub fn parse(text: &str) -> Result<Self, SearchError> {
        text.parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Cursor)
            .ok_or_else(|| {
                SearchError::Invalid(format!("cursor {text:?} is not a cursor of this list"))
            })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One delivery of a listed event, without its attempt record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliverySummary {
    pub destination_id: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
}

impl From<Delivery> for DeliverySummary {
    fn from(d: Delivery) -> Self {
        Self {
            last_status: d.last_attempt.as_ref().and_then(|a| a.status),
            destination_id: d.destination_id,
            status: d.status,
            attempts: d.attempts,
        }
    }
}

/// One event of a search page.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventSummary {
    pub id: String,
    pub tenant: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    /// When `HS_EVENTS` stored it.
    pub stored_at: DateTime<Utc>,
    pub stream_seq: u64,
    /// The destination of a directed event (`destination_id` at ingest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_id: Option<String>,
    pub deliveries: Vec<DeliverySummary>,
}

/// A page of events and the cursor of the next one (`None`: nothing more).
pub struct Page {
    pub events: Vec<EventSummary>,
    pub next: Option<Cursor>,
}

/// The fields of an envelope a listing shows (`data` is skipped, not kept).
#[derive(Deserialize)]
struct Head {
    id: String,
    tenant: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    occurred_at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
}

/// Up to `want` events of `query`, newest first, below `cursor`.
pub async fn search(
    deliveries: Deliveries<'_>,
    query: &Query,
    cursor: Option<Cursor>,
    want: usize,
) -> Result<Page, SearchError> {
    let broker = deliveries.broker;
    if let (Some(a), Some(b)) = (query.since, query.until)
        && a > b
    {
        return Err(SearchError::Invalid("since is after until".into()));
    }
    let info = broker
        .events
        .get_info()
        .await
        .map_err(|e| BrokerError::new("reading the events stream", e))?;
    let empty = Page {
        events: Vec::new(),
        next: None,
    };
    let mut lo = info.state.first_sequence.max(1);
    let mut hi = info.state.last_sequence;
    if let Some(c) = cursor {
        hi = hi.min(c.0.saturating_sub(1));
    }
    if info.state.messages == 0 || lo > hi {
        return Ok(empty);
    }
    // The time index is the stream's, whatever the subject: `>` matches every message.
    let all = ">";
    if let Some(since) = query.since {
        match direct::first_seq_at(broker, EVENTS_STREAM, all, since).await? {
            Some(seq) => lo = lo.max(seq),
            None => return Ok(empty),
        }
    }
    if let Some(until) = query.until {
        let after = until + chrono::Duration::nanoseconds(1);
        if let Some(seq) = direct::first_seq_at(broker, EVENTS_STREAM, all, after).await? {
            hi = hi.min(seq.saturating_sub(1));
        }
    }
    if lo > hi {
        return Ok(empty);
    }
    let mut walkers: Vec<Walker> = filters(broker, query)
        .into_iter()
        .map(|filter| Walker::new(EVENTS_STREAM, filter, lo, hi, want.max(1)))
        .collect();

    let want = want.max(1);
    let mut out: Vec<EventSummary> = Vec::new();
    let mut looked_at = 0usize;
    let mut lowest = hi.saturating_add(1);
    loop {
        // Candidates for the rest of the page: their deliveries are read together.
        let room = (want - out.len()).max(8);
        let mut chunk = Vec::new();
        let mut exhausted = false;
        while chunk.len() < room && looked_at < BUDGET {
            let Some(message) = next_newest(broker, &mut walkers).await? else {
                exhausted = true;
                break;
            };
            looked_at += 1;
            lowest = message.seq;
            if let Some(event) = summarise(deliveries, query, &message) {
                chunk.push(event);
            }
        }
        let kept = with_deliveries(deliveries, query, chunk).await?;
        for event in kept {
            let seq = event.stream_seq;
            out.push(event);
            if out.len() == want {
                // Whatever was looked at below this one is read again by the next page.
                return Ok(Page {
                    events: out,
                    next: (seq > lo).then_some(Cursor(seq)),
                });
            }
        }
        if exhausted {
            return Ok(Page {
                events: out,
                next: None,
            });
        }
        if looked_at >= BUDGET {
            return Ok(Page {
                events: out,
                next: (lowest > lo).then_some(Cursor(lowest)),
            });
        }
    }
}

/// The subject filters whose union holds every event the query can match.
fn filters(broker: &Broker, query: &Query) -> Vec<String> {
    let s = &broker.subjects;
    let pattern = query.event_type.as_ref().map(EventPattern::as_str);
    let Some(dest) = &query.destination else {
        if query.tenant.is_none() && pattern.is_none() {
            // The stream holds events only: `>` is the union of the two filters below,
            // and the server counts a batch's pending matches from block totals for it
            // instead of matching subjects in every block above (ADR 0016).
            return vec![">".to_string()];
        }
        return vec![
            s.event_search(query.tenant.as_ref().map(TenantId::as_str), pattern),
            s.directed_search(None, pattern),
        ];
    };
    let tenant = Some(dest.tenant.as_str());
    let mut out = vec![s.directed_search(Some(dest.id.as_str()), pattern)];
    if pattern.is_some() || dest.event_types.len() > MAX_PATTERN_FILTERS {
        out.push(s.event_search(tenant, pattern));
    } else {
        out.extend(
            dest.event_types
                .iter()
                .map(|p| s.event_search(tenant, Some(p.as_str()))),
        );
    }
    out
}

/// The message as a listed event, if it is one the query wants (its deliveries are
/// added later, for a whole chunk at once).
fn summarise(
    deliveries: Deliveries<'_>,
    query: &Query,
    message: &StoredMessage,
) -> Option<EventSummary> {
    if message.header(headers::REPLAY_OF).is_some() || message.header(headers::RESEND_OF).is_some()
    {
        return None;
    }
    let head: Head = serde_json::from_slice(&message.payload).ok()?;
    let (event_type, directed_to) = match deliveries
        .broker
        .subjects
        .parse_event_subject(&message.subject)?
    {
        EventSubject::Tenant { tenant, event_type } => {
            // The subject's tenant is authoritative; a mismatch was dead-lettered.
            if tenant != head.tenant {
                return None;
            }
            (event_type, None)
        }
        EventSubject::Directed {
            destination,
            event_type,
        } => {
            let owner = deliveries
                .registry
                .and_then(|r| r.get(destination))
                .map(|d| d.tenant.to_string());
            if owner.is_some_and(|t| t != head.tenant) {
                return None;
            }
            (event_type, Some(destination))
        }
    };
    if query
        .tenant
        .as_ref()
        .is_some_and(|t| t.as_str() != head.tenant)
        || query
            .event_type
            .as_ref()
            .is_some_and(|p| !p.matches(event_type))
    {
        return None;
    }
    if let Some(dest) = &query.destination {
        let routed_here = match directed_to {
            Some(d) => d == dest.id.as_str(),
            None => {
                dest.tenant.as_str() == head.tenant
                    && dest.accepts(event_type)
                    && dest.created_at <= message.time
            }
        };
        if !routed_here {
            return None;
        }
    }
    Some(EventSummary {
        id: head.id,
        tenant: head.tenant,
        event_type: event_type.to_string(),
        source: head.source,
        occurred_at: head.occurred_at,
        received_at: head.received_at,
        stored_at: message.time,
        stream_seq: message.seq,
        destination_id: directed_to.map(String::from),
        deliveries: Vec::new(),
    })
}

/// Adds the deliveries of a chunk of events, and keeps those the status filter wants.
async fn with_deliveries(
    deliveries: Deliveries<'_>,
    query: &Query,
    mut events: Vec<EventSummary>,
) -> Result<Vec<EventSummary>, SearchError> {
    if events.is_empty() {
        return Ok(events);
    }
    let only = query.destination.as_ref().map(|d| d.id.as_str());
    let refs: Vec<EventRef<'_>> = events
        .iter()
        .map(|e| EventRef {
            tenant: &e.tenant,
            id: &e.id,
            event_type: Some(&e.event_type),
            directed_to: e.destination_id.as_deref(),
            stored_at: Some(e.stored_at),
        })
        .collect();
    let mut found = deliveries.of_events(&refs, only).await?;
    drop(refs);
    for event in &mut events {
        event.deliveries = found
            .remove(&event.id)
            .unwrap_or_default()
            .into_iter()
            .map(DeliverySummary::from)
            .collect();
    }
    if let Some(status) = query.status {
        events.retain(|e| e.deliveries.iter().any(|d| d.status == status));
    }
    Ok(events)
}
