//! The one path by which a dead letter is stored, counted and announced
//! (`hookstream.event.dead_lettered`), for the worker (last attempt, `410`, a delivery
//! that does not parse) and the router (`malformed_event`, `tenant_mismatch`). The
//! caller acknowledges the original only after `Ok`: a crash in between duplicates a dead
//! letter, never loses one.

use tracing::warn;

use super::stats::{Counter, StatsCounters};
use crate::broker::{Broker, BrokerError};
use crate::dlq::{self, DeadLetter};
use crate::operations;
use crate::telemetry::metrics as m;

/// Stores `letter` (of event `event_id`, when the body says) on `HS_DLQ`, acked by the
/// server, then counts it.
pub async fn store(
    broker: &Broker,
    stats: &StatsCounters,
    event_id: Option<&str>,
    letter: DeadLetter<'_>,
) -> Result<(), BrokerError> {
    let destination = letter.destination_id.to_string();
    let reason = letter.reason;
    let seq = letter.original_seq;
    let attempts = letter.attempts;
    dlq::publish::publish(broker, letter.clone()).await?;
    metrics::counter!(
        m::DEAD_LETTERED,
        "reason" => reason.as_str(),
        "destination" => m::destination_label(&destination)
    )
    .increment(1);
    stats.add(&destination, Counter::DeadLettered);
    warn!(
        event_id = event_id.unwrap_or_default(),
        destination_id = %destination,
        seq,
        reason = reason.as_str(),
        attempts,
        "dead-lettered"
    );
    // Stored first: the announcement of a dead letter never stands for one that is not.
    operations::dead_lettered(
        broker,
        operations::DeadLettered {
            tenant: letter.tenant,
            destination_id: letter.destination_id,
            event_id,
            reason: reason.as_str(),
            attempts,
            last_status: letter.last_status,
            last_error: letter.last_error,
            original_seq: seq,
            body: &letter.body,
        },
    )
    .await;
    Ok(())
}
