//! Removing dead letters without sending them: one by id, or a selection.
//!
//! A selection by tenant and/or destination only is purged in one request (a stream purge
//! with a subject filter, up to the stream's last sequence when the purge began). A
//! selection with an event type or time range deletes each matching dead letter, a page
//! at a time, like a replay.

use futures::StreamExt;
use tracing::info;

use super::DlqError;
use super::filter::Target;
use super::select::{self, Cursor};
use crate::broker::{Broker, BrokerError, messages, names};
use crate::model::TenantId;

/// Deletes in flight at once.
const CONCURRENCY: usize = 32;

#[derive(Debug, Clone)]
pub struct PurgeRequest {
    pub target: Target,
    /// Only dead letters of this tenant (a tenant key's); see `ReplayRequest::tenant`.
    pub tenant: Option<TenantId>,
    pub cursor: Option<Cursor>,
    pub limit: usize,
    /// Count only.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default)]
pub struct PurgeReport {
    pub matched: u64,
    pub purged: u64,
    pub not_found: Vec<u64>,
    pub next: Option<Cursor>,
}

/// Deletes one dead letter; `NotFound` when there is none with that id.
pub async fn delete_one(broker: &Broker, seq: u64) -> Result<(), DlqError> {
    if seq == 0 || !delete(broker, seq).await? {
        return Err(DlqError::NotFound(format!("dead letter {seq} not found")));
    }
    info!(dead_letter = seq, "dead letter deleted");
    Ok(())
}

/// Deletes dead letters; one already gone (a concurrent replay or purge) is not an error.
pub(super) async fn delete_many(broker: &Broker, seqs: &[u64]) -> Result<u64, DlqError> {
    let results: Vec<Result<bool, DlqError>> = futures::stream::iter(seqs.iter().copied())
        .map(|seq| delete(broker, seq))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut deleted = 0;
    for result in results {
        if result? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// `Ok(false)` when there was no such message.
async fn delete(broker: &Broker, seq: u64) -> Result<bool, DlqError> {
    Ok(messages::delete(&broker.js, names::DLQ_STREAM, seq).await?)
}

pub async fn purge(broker: &Broker, request: PurgeRequest) -> Result<PurgeReport, DlqError> {
    if let Target::Filter(filter) = &request.target
        && request
            .tenant
            .as_ref()
            .is_none_or(|t| filter.tenant.as_ref() == Some(t))
        && filter.is_by_subject_only()
        && request.cursor.is_none()
        && !request.dry_run
    {
        // One request, however many: everything on the subject up to the last sequence
        // now (dead letters stored during the purge stay).
        let info = broker
            .dlq
            .get_info()
            .await
            .map_err(|e| BrokerError::new("reading the dead-letter stream", e))?;
        let purged = broker
            .dlq
            .purge()
            .filter(filter.filter_subject(broker))
            .sequence(info.state.last_sequence + 1)
            .await
            .map_err(|e| BrokerError::new("purging dead letters", e))?
            .purged;
        info!(purged, "dead letters purged");
        return Ok(PurgeReport {
            matched: purged,
            purged,
            ..Default::default()
        });
    }
    let picked = select::pick(
        broker,
        &request.target,
        request.tenant.as_ref(),
        request.cursor,
        request.limit,
    )
    .await?;
    let mut report = PurgeReport {
        matched: picked.letters.len() as u64,
        not_found: picked.not_found,
        next: picked.next,
        ..Default::default()
    };
    if !request.dry_run {
        let seqs: Vec<u64> = picked.letters.iter().map(|l| l.seq).collect();
        report.purged = delete_many(broker, &seqs).await?;
        if report.purged > 0 {
            info!(purged = report.purged, "dead letters purged");
        }
    }
    Ok(report)
}
