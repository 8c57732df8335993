//! Attempts (one HTTP request for one event and destination) and delivery status.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What an attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// 2xx: done.
    Delivered,
    /// Failed; another attempt is scheduled at `next_attempt_at`.
    Retrying,
    /// Failed for the last time (or `410 Gone`): the event went to `HS_DLQ`.
    DeadLettered,
}

/// One record on `HS_ATTEMPTS` (`hs.att.<tenant>.<event_id>.<destination_id>`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptRecord {
    pub event_id: String,
    pub tenant: String,
    pub destination_id: String,
    pub event_type: String,
    /// 1 for the first attempt. Throttling and open circuits do not count.
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The first 4 KiB of the response body (lossy UTF-8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub outcome: AttemptOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Sequence of the event's message on `HS_EVENTS`.
    pub stream_seq: u64,
}

/// Delivery status of an (event, destination) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Retrying,
    Delivered,
    DeadLettered,
    Throttled,
}

impl DeliveryStatus {
    /// The status after the latest recorded attempt, `Pending` when there is none.
    pub fn from_last_attempt(last: Option<&AttemptRecord>) -> Self {
        match last.map(|a| a.outcome) {
            None => Self::Pending,
            Some(AttemptOutcome::Delivered) => Self::Delivered,
            Some(AttemptOutcome::Retrying) => Self::Retrying,
            Some(AttemptOutcome::DeadLettered) => Self::DeadLettered,
        }
    }
}
