//! Replay: each selected dead letter is re-published to `hs.to.<destination_id>.<type>`
//! (that destination only), then removed from `HS_DLQ`.
//!
//! - Same body, so the same event id and `webhook-id`; the original headers (event type,
//!   tenant, `traceparent`/`tracestate`, so the trace link holds) without the dead-letter
//!   ones, plus `Hs-Replay-Of: <dead-letter id>`.
//! - A new message on `HS_EVENTS` has a new stream sequence, and attempts are counted per
//!   sequence (ADR 0002): the replay starts with a fresh attempt budget.
//! - The dead letter is deleted only after the re-publish is acknowledged: a crash in
//!   between leaves it in `HS_DLQ`, never loses it.
//! - Twice the same selection does not send twice: the re-publish carries
//!   `Nats-Msg-Id: replay-<dead-letter id>`, so within `HS_EVENTS`' duplicate window a
//!   second re-publish of the same dead letter (after a crash before the delete, or a
//!   concurrent replay) is dropped by JetStream; after a completed replay the dead letter
//!   is gone and no later selection finds it. Only a crash between re-publish and delete
//!   followed by a replay more than the duplicate window later sends twice, with the same
//!   `webhook-id` (at-least-once).
//! - Publishes are sent in sequence order and their acks awaited in chunks, so an
//!   `ordered` destination gets its dead letters in their original order.

use std::collections::BTreeMap;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishAckFuture;
use tracing::{Instrument, info};

use super::filter::{DeadLetterFilter, Target};
use super::letter::{StoredDeadLetter, carried_headers};
use super::select::{self, Cursor};
use super::{DlqError, purge};
use crate::broker::names::{self, headers as h};
use crate::broker::{Broker, BrokerError};
use crate::destinations::DestinationStore;
use crate::model::{Destination, DestinationId, Envelope, TenantId};
use crate::telemetry::metrics as m;
use crate::telemetry::{propagation, spans};

/// Re-publishes in flight at once; their acks are awaited together.
const CHUNK: usize = 64;

#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub target: Target,
    /// Only dead letters of this tenant (a tenant key's); listed ids of another tenant
    /// are reported as not found, and a named destination of another as deleted.
    pub tenant: Option<TenantId>,
    /// Go on from here (the `next_cursor` of the previous call); filters only.
    pub cursor: Option<Cursor>,
    /// Dead letters handled in this call at most.
    pub limit: usize,
    /// Re-enable a disabled destination instead of refusing.
    pub enable_destination: bool,
    /// Count only: nothing is published or removed.
    pub dry_run: bool,
}

/// Why dead letters are not replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    DestinationDeleted,
    DestinationDisabled,
    /// The body is not an event envelope (or not the dead letter's tenant's).
    MalformedEvent,
}

impl Refusal {
    /// The contract's code for it (`skipped[].code`, the error code of a refused request).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::DestinationDeleted => "destination_deleted",
            Refusal::DestinationDisabled => "destination_disabled",
            Refusal::MalformedEvent => "malformed_event",
        }
    }
}

/// A refusal and its message for people.
#[derive(Debug, Clone)]
struct Refused {
    why: Refusal,
    message: String,
}

impl From<Refused> for DlqError {
    fn from(r: Refused) -> Self {
        match r.why {
            Refusal::DestinationDeleted => DlqError::DestinationDeleted(r.message),
            Refusal::DestinationDisabled => DlqError::DestinationDisabled(r.message),
            // Only a destination refuses a whole request; kept total all the same.
            Refusal::MalformedEvent => DlqError::Conflict(r.message),
        }
    }
}

/// Dead letters left in `HS_DLQ` for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub destination_id: String,
    pub why: Refusal,
    pub count: u64,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    /// Dead letters selected in this call.
    pub matched: u64,
    /// Re-published (acknowledged as new) and removed from `HS_DLQ`.
    pub replayed: u64,
    /// Re-published before (a replay cut short within the duplicate window): not sent
    /// again, now removed from `HS_DLQ`.
    pub already_replayed: u64,
    /// Left in `HS_DLQ`: their destination is gone or disabled (filter replays that do
    /// not name a destination), or the body is not an event.
    pub skipped: Vec<Skipped>,
    /// Listed ids that are not (or no longer) dead letters.
    pub not_found: Vec<u64>,
    /// Destinations re-enabled because the request asked for it.
    pub enabled_destinations: Vec<String>,
    pub next: Option<Cursor>,
}

/// Where a dead letter's destination stands.
enum Standing {
    Active(Box<Destination>),
    Deleted,
    Disabled(Option<String>),
}

impl Standing {
    fn refusal(&self, id: &str, count: u64) -> Option<Refused> {
        let letters = if count == 1 {
            "1 dead letter".to_string()
        } else {
            format!("{count} dead letters")
        };
        match self {
            Standing::Active(_) => None,
            Standing::Deleted => Some(Refused {
                why: Refusal::DestinationDeleted,
                message: format!(
                    "destination {id} does not exist (deleted?); its {letters} cannot be \
                     replayed: recreate it with the same id, or purge them"
                ),
            }),
            Standing::Disabled(reason) => Some(Refused {
                why: Refusal::DestinationDisabled,
                message: format!(
                    "destination {id} is disabled{}; its {letters} were not replayed: pass \
                     enable_destination: true to re-enable it and replay",
                    reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ),
            }),
        }
    }
}

/// Selects, checks destinations, then (unless a dry run) re-publishes and removes.
pub async fn replay(
    broker: &Broker,
    store: &DestinationStore,
    request: ReplayRequest,
) -> Result<ReplayReport, DlqError> {
    let mut report = ReplayReport::default();
    // A request that names its destination is refused as a whole when that destination
    // cannot receive; one over a whole tenant replays what it can and says what it left.
    let named = match &request.target {
        Target::Ids(_) => true,
        Target::Filter(f) => f.destination_id.is_some(),
    };
    let mut standings: BTreeMap<String, Standing> = BTreeMap::new();
    if let Target::Filter(DeadLetterFilter {
        destination_id: Some(id),
        ..
    }) = &request.target
    {
        // Refused before anything is read, even when it has no dead letters.
        let tenant = request.tenant.as_ref().map(TenantId::as_str);
        let standing = standing_of(store, id.as_str(), tenant).await?;
        if let Some(refused) = standing.refusal(id.as_str(), 0)
            && !(request.enable_destination && matches!(standing, Standing::Disabled(_)))
        {
            return Err(refused.into());
        }
    }

    let picked = select::pick(
        broker,
        &request.target,
        request.tenant.as_ref(),
        request.cursor,
        request.limit,
    )
    .await?;
    let letters = picked.letters;
    report.matched = letters.len() as u64;
    report.next = picked.next;
    report.not_found = picked.not_found;

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for letter in &letters {
        *counts.entry(letter.destination_id.clone()).or_default() += 1;
    }
    for id in counts.keys() {
        if !standings.contains_key(id) {
            let tenant = letters
                .iter()
                .find(|l| l.destination_id == *id)
                .map(|l| l.tenant.as_str());
            standings.insert(id.to_string(), standing_of(store, id, tenant).await?);
        }
    }
    if named {
        let refusals: Vec<Refused> = counts
            .iter()
            .filter_map(|(id, n)| {
                let standing = &standings[id];
                let enable =
                    request.enable_destination && matches!(standing, Standing::Disabled(_));
                (!enable).then(|| standing.refusal(id, *n)).flatten()
            })
            .collect();
        if let Some(first) = refusals.first() {
            let message = refusals
                .iter()
                .map(|r| r.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Refused {
                why: first.why,
                message,
            }
            .into());
        }
    }
    if request.enable_destination && !request.dry_run {
        for (id, standing) in standings.iter_mut() {
            if matches!(standing, Standing::Disabled(_)) && counts.contains_key(id) {
                let enabled = enable(store, id).await?;
                *standing = Standing::Active(Box::new(enabled));
                report.enabled_destinations.push(id.clone());
            }
        }
    }

    let mut jobs = Vec::with_capacity(letters.len());
    let mut skipped: BTreeMap<(String, Refusal), (u64, String)> = BTreeMap::new();
    for letter in letters {
        let standing = &standings[letter.destination_id.as_str()];
        let will_enable = request.enable_destination && matches!(standing, Standing::Disabled(_));
        let outcome = match standing {
            _ if will_enable => job(broker, &letter, &letter.destination_id),
            Standing::Active(d) if d.tenant.as_str() == letter.tenant => {
                job(broker, &letter, d.id.as_str())
            }
            Standing::Active(_) => Err(Standing::Deleted
                .refusal(
                    &letter.destination_id,
                    counts[letter.destination_id.as_str()],
                )
                .expect("a deleted destination is refused")),
            other => Err(other
                .refusal(
                    &letter.destination_id,
                    counts[letter.destination_id.as_str()],
                )
                .expect("an inactive destination is refused")),
        };
        match outcome {
            Ok(job) => jobs.push(job),
            Err(Refused { why, message }) => {
                let entry = skipped
                    .entry((letter.destination_id.clone(), why))
                    .or_insert((0, message));
                entry.0 += 1;
            }
        }
    }
    report.skipped = skipped
        .into_iter()
        .map(|((destination_id, why), (count, message))| Skipped {
            destination_id,
            why,
            count,
            message,
        })
        .collect();
    if request.dry_run {
        return Ok(report);
    }
    for chunk in jobs.chunks(CHUNK) {
        let (fresh, repeated) = republish_chunk(broker, chunk).await?;
        report.replayed += fresh;
        report.already_replayed += repeated;
    }
    metrics::counter!(m::DLQ_REPLAYED).increment(report.replayed);
    if report.replayed + report.already_replayed > 0 {
        info!(
            replayed = report.replayed,
            already_replayed = report.already_replayed,
            "dead letters replayed"
        );
    }
    Ok(report)
}

/// A destination that exists under another tenant is not the one the dead letter was
/// for (the id was deleted and reused): treated as deleted.
async fn standing_of(
    store: &DestinationStore,
    id: &str,
    tenant: Option<&str>,
) -> Result<Standing, DlqError> {
    let Ok(parsed) = DestinationId::parse(id) else {
        return Ok(Standing::Deleted);
    };
    Ok(match store.get(&parsed).await? {
        None => Standing::Deleted,
        Some((d, _)) if tenant.is_some_and(|t| t != d.tenant.as_str()) => Standing::Deleted,
        Some((d, _)) if !d.enabled => Standing::Disabled(d.disabled_reason.clone()),
        // A paused destination takes the replay; it waits in the stream until resumed.
        Some((d, _)) => Standing::Active(Box::new(d)),
    })
}

async fn enable(store: &DestinationStore, id: &str) -> Result<Destination, DlqError> {
    let id = DestinationId::parse(id).map_err(|e| DlqError::Invalid(e.to_string()))?;
    let destination = store
        .modify(&id, |d| {
            d.enabled = true;
            d.disabled_reason = None;
            Ok(())
        })
        .await?;
    info!(destination_id = %id, "destination re-enabled for a dead-letter replay");
    Ok(destination)
}

/// One re-publish: where, with what, and which dead letter it removes.
struct Job {
    dlq_seq: u64,
    event_id: String,
    subject: String,
    headers: HeaderMap,
    body: bytes::Bytes,
}

fn job(broker: &Broker, letter: &StoredDeadLetter, destination: &str) -> Result<Job, Refused> {
    let malformed = |why: String| Refused {
        why: Refusal::MalformedEvent,
        message: format!(
            "dead letters of destination {destination} whose body is not an event cannot be \
             replayed ({why}); purge them"
        ),
    };
    let envelope: Envelope =
        serde_json::from_slice(&letter.body).map_err(|e| malformed(e.to_string()))?;
    if envelope.tenant.as_str() != letter.tenant {
        return Err(malformed(format!(
            "envelope tenant {} differs from the dead letter's tenant {}",
            envelope.tenant, letter.tenant
        )));
    }
    let destination_id = DestinationId::parse(destination).map_err(|e| malformed(e.to_string()))?;
    let mut headers = carried_headers(&letter.headers);
    headers.insert(h::MSG_ID, names::replay_msg_id(letter.seq).as_str());
    headers.insert(h::REPLAY_OF, letter.seq.to_string().as_str());
    Ok(Job {
        dlq_seq: letter.seq,
        event_id: envelope.id.to_string(),
        subject: broker
            .subjects
            .directed(&destination_id, &envelope.event_type),
        headers,
        body: letter.body.clone(),
    })
}

/// Publishes a chunk in order, awaits the acks, then removes the acknowledged dead
/// letters. Returns (new, duplicate) re-publishes; the first failure is returned after
/// the acknowledged ones are removed, so a retry repeats as little as possible.
async fn republish_chunk(broker: &Broker, chunk: &[Job]) -> Result<(u64, u64), DlqError> {
    let mut pending: Vec<(u64, Result<PublishAckFuture, BrokerError>)> =
        Vec::with_capacity(chunk.len());
    for job in chunk {
        // A span of the event's own trace (the dead letter carries its context), linked
        // to the replay request; the re-published message carries the span's context.
        let span = spans::republish(
            names::EVENTS_STREAM,
            &job.subject,
            job.headers.get(h::MSG_ID).map_or("", |v| v.as_str()),
            &job.event_id,
            &job.headers,
            "replay",
        );
        let mut headers = job.headers.clone();
        propagation::inject_nats(&span, &mut headers);
        // Sent one after the other, so the stream stores them in this order.
        let sent = broker
            .js
            .publish_with_headers(job.subject.clone(), headers, job.body.clone())
            .instrument(span)
            .await
            .map_err(|e| BrokerError::new("re-publishing a dead letter", e));
        let failed = sent.is_err();
        pending.push((job.dlq_seq, sent));
        if failed {
            break;
        }
    }
    let acks = futures::future::join_all(pending.into_iter().map(|(seq, sent)| async move {
        let ack = match sent {
            Ok(future) => future
                .await
                .map_err(|e| BrokerError::new("awaiting a replay's ack", e)),
            Err(e) => Err(e),
        };
        (seq, ack)
    }))
    .await;
    let mut first_error = None;
    let mut acked = Vec::with_capacity(acks.len());
    let (mut fresh, mut repeated) = (0, 0);
    for (seq, ack) in acks {
        match ack {
            Ok(ack) => {
                if ack.duplicate {
                    repeated += 1;
                } else {
                    fresh += 1;
                }
                acked.push(seq);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    // Only now, with every re-publish of `acked` stored, may their dead letters go.
    purge::delete_many(broker, &acked).await?;
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok((fresh, repeated)),
    }
}
