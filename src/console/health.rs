//! A destination's health as the console shows it: success rate of its attempts over
//! the last hour, its last error, backlog, circuit, and whether it is paused or disabled.
//!
//! Attempts are read newest first from `HS_ATTEMPTS` on `hs.att.<tenant>.*.<id>` (the
//! server skips other destinations' records), at most [`SAMPLE`] of them: the rate of a
//! busy destination is that of its latest attempts within the hour.

use chrono::{DateTime, Duration, Utc};

use crate::broker::backward::Walker;
use crate::broker::names::ATTEMPTS_STREAM;
use crate::broker::{Broker, BrokerError};
use crate::flow::Flow;
use crate::model::circuit::{CircuitView, Phase};
use crate::model::{AttemptOutcome, AttemptRecord, Destination};

/// Attempts looked at for the success rate at most.
pub const SAMPLE: usize = 200;

/// Health at a glance: what the row's colour says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Healthy,
    /// Its last attempt failed, its circuit is open, or hookstream disabled it.
    Failing,
    /// Paused or disabled by an operator.
    Paused,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Failing => "failing",
            State::Paused => "paused",
        }
    }
}

pub struct Health {
    pub state: State,
    /// Delivered attempts / attempts, over the last hour; `None` without attempts.
    pub success_rate: Option<f64>,
    pub attempts_last_hour: usize,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub pending: u64,
    pub retrying: u64,
    pub circuit: CircuitView,
}

/// The newest attempts of a destination, at most `limit`, none older than `since`.
/// `top`: the attempts stream's last sequence (read once per page).
pub async fn recent_attempts(
    broker: &Broker,
    destination: &Destination,
    top: u64,
    limit: usize,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<AttemptRecord>, BrokerError> {
    let filter = broker
        .subjects
        .attempt(destination.tenant.as_str(), "*", destination.id.as_str());
    let mut walker = Walker::new(ATTEMPTS_STREAM, filter, 1, top, limit);
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(message) = walker.next(broker).await? else {
            break;
        };
        if since.is_some_and(|t| message.time < t) {
            break;
        }
        if let Ok(record) = serde_json::from_slice::<AttemptRecord>(&message.payload) {
            out.push(record);
        }
    }
    Ok(out)
}

/// The last sequence of `HS_ATTEMPTS`.
pub async fn attempts_top(broker: &Broker) -> Result<u64, BrokerError> {
    let info = broker
        .attempts
        .get_info()
        .await
        .map_err(|e| BrokerError::new("reading the attempts stream", e))?;
    Ok(info.state.last_sequence)
}

pub async fn of(
    broker: &Broker,
    flow: &Flow,
    destination: &Destination,
    top: u64,
) -> Result<Health, BrokerError> {
    let hour_ago = Utc::now() - Duration::hours(1);
    let attempts = recent_attempts(broker, destination, top, SAMPLE, Some(hour_ago)).await?;
    let delivered = attempts
        .iter()
        .filter(|a| a.outcome == AttemptOutcome::Delivered)
        .count();
    let last = attempts.first();
    let last_failed = attempts
        .iter()
        .find(|a| a.outcome != AttemptOutcome::Delivered);
    let circuit = flow.circuits.view(destination.id.as_str());
    let (pending, retrying) = broker.destination_backlog(destination.id.as_str()).await;
    let state = if destination.disabled_reason.is_some()
        || circuit.state == Phase::Open
        || last.is_some_and(|a| a.outcome != AttemptOutcome::Delivered)
    {
        State::Failing
    } else if !destination.is_active() {
        State::Paused
    } else {
        State::Healthy
    };
    Ok(Health {
        state,
        success_rate: (!attempts.is_empty()).then(|| delivered as f64 / attempts.len() as f64),
        attempts_last_hour: attempts.len(),
        last_error: last_failed.map(describe_failure),
        last_attempt_at: last.map(|a| a.started_at),
        pending,
        retrying,
        circuit,
    })
}

/// One line for a failed attempt: its status and error.
pub fn describe_failure(a: &AttemptRecord) -> String {
    match (a.status, &a.error) {
        (Some(s), Some(e)) => format!("HTTP {s}: {e}"),
        (Some(s), None) => format!("HTTP {s}"),
        (None, Some(e)) => e.clone(),
        (None, None) => "failed".into(),
    }
}
