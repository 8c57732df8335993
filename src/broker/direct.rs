//! Direct gets that async-nats has no call for: the batch forms of
//! `$JS.API.DIRECT.GET.<stream>` (nats-server 2.11+, ADR-31): `next_by_subj` with `batch`
//! (many messages of one filter in one round trip), `multi_last` with `up_to_seq` (the
//! last message of every subject matching some filters) and `start_time` (the first
//! message stored at or after a time, found by the server's own time index); and
//! `next_by_subj` without a batch (the next match only, which the server answers without
//! counting the matches left: far cheaper deep in a large stream, ADR 0016).
//!
//! A batch answer is a run of messages on one inbox, each with `Nats-Subject`,
//! `Nats-Sequence` and `Nats-Time-Stamp` headers, ended by a `204 EOB` status message;
//! `404` means nothing matched. Any replica (or NATS client) reads the same way, and no
//! consumer is created.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use super::{Broker, BrokerError, BrokerErrorKind};

/// A batch answer stops at this many bytes (its last message may pass it): pages of large
/// events stay bounded in memory.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// nats-server answers at most 1024 messages to one `multi_last` request (413 beyond).
pub const MAX_MULTI_LAST: usize = 1024;

/// One message as a direct get returns it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub subject: String,
    pub seq: u64,
    pub time: DateTime<Utc>,
    /// The message's own headers (the `Nats-*` ones the server adds are left out).
    pub headers: HeaderMap,
    pub payload: Bytes,
}

impl StoredMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.as_str())
    }
}

#[derive(Serialize, Default)]
struct Request<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_by_subj: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    multi_last: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    up_to_seq: Option<u64>,
}

fn api_subject(stream: &str) -> String {
    format!("$JS.API.DIRECT.GET.{stream}")
}

/// Messages of one batch, and whether more match after the last of them.
pub struct Batch {
    pub messages: Vec<StoredMessage>,
    pub more: bool,
}

/// Up to `batch` messages on `filter` from sequence `from` on, oldest first.
pub async fn next_batch(
    broker: &Broker,
    stream: &str,
    filter: &str,
    from: u64,
    batch: usize,
) -> Result<Batch, BrokerError> {
    let request = Request {
        seq: Some(from.max(1)),
        next_by_subj: Some(filter),
        batch: Some(batch.max(1)),
        max_bytes: Some(MAX_BATCH_BYTES),
        ..Default::default()
    };
    let (messages, pending) = batch_request(broker, stream, &request).await?;
    Ok(Batch {
        more: pending > 0,
        messages,
    })
}

/// The last message of every subject matching `filters`, at or below `up_to` (the whole
/// stream when `None`), in sequence order. At most [`MAX_MULTI_LAST`] subjects: more is
/// an error of kind `Other` that the caller can split.
pub async fn last_per_subject(
    broker: &Broker,
    stream: &str,
    filters: &[String],
    up_to: Option<u64>,
) -> Result<Vec<StoredMessage>, BrokerError> {
    if filters.is_empty() {
        return Ok(Vec::new());
    }
    let request = Request {
        multi_last: filters,
        up_to_seq: up_to,
        batch: Some(MAX_MULTI_LAST),
        ..Default::default()
    };
    Ok(batch_request(broker, stream, &request).await?.0)
}

/// Whether a `last_per_subject` failed because the filters match too many subjects.
pub fn is_too_many(e: &BrokerError) -> bool {
    e.context == TOO_MANY
}

const TOO_MANY: &str = "direct get: too many subjects";

/// The sequence of the first message on `filter` stored at or after `time`, by the
/// server's time index (one round trip, no scan).
pub async fn first_seq_at(
    broker: &Broker,
    stream: &str,
    filter: &str,
    time: DateTime<Utc>,
) -> Result<Option<u64>, BrokerError> {
    let request = Request {
        next_by_subj: Some(filter),
        start_time: Some(time),
        ..Default::default()
    };
    Ok(
        single_request(broker, stream, &request, "direct get by time")
            .await?
            .map(|m| m.seq),
    )
}

/// The first message on `filter` at or after sequence `from`. One message, no batch: the
/// server then counts no pending matches, which is most of a batch's cost deep in a
/// large stream (`backward.rs`).
pub async fn next_one(
    broker: &Broker,
    stream: &str,
    filter: &str,
    from: u64,
) -> Result<Option<StoredMessage>, BrokerError> {
    let request = Request {
        seq: Some(from.max(1)),
        next_by_subj: Some(filter),
        ..Default::default()
    };
    single_request(broker, stream, &request, "direct get next").await
}

/// A direct get answered by one message, or `None` for `404` (nothing matched).
async fn single_request(
    broker: &Broker,
    stream: &str,
    request: &Request<'_>,
    context: &'static str,
) -> Result<Option<StoredMessage>, BrokerError> {
    let payload = serde_json::to_vec(request).expect("a direct get request serialises");
    let started = std::time::Instant::now();
    let reply = broker
        .client
        .request(api_subject(stream), payload.clone().into())
        .await
        .map_err(|e| BrokerError::new(context, e))?;
    tracing::trace!(
        stream,
        request = %String::from_utf8_lossy(&payload),
        status = reply.status.map(|s| s.as_u16()),
        micros = started.elapsed().as_micros() as u64,
        "direct get"
    );
    match reply.status.map(|s| s.as_u16()) {
        None => Ok(Some(parse(reply)?)),
        Some(404) => Ok(None),
        Some(code) => Err(status_error(context, code, reply.description)),
    }
}

/// The messages of a batch answer and the `Nats-Num-Pending` of its end (what matches
/// after the last message sent).
async fn batch_request(
    broker: &Broker,
    stream: &str,
    request: &Request<'_>,
) -> Result<(Vec<StoredMessage>, u64), BrokerError> {
    let payload = serde_json::to_vec(request).expect("a direct get request serialises");
    let inbox = broker.client.new_inbox();
    let mut answers = broker
        .client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| BrokerError::new("direct get batch", e))?;
    broker
        .client
        .publish_with_reply(api_subject(stream), inbox, payload.clone().into())
        .await
        .map_err(|e| BrokerError::new("direct get batch", e))?;
    let patience = broker_timeout();
    let started = std::time::Instant::now();
    let trace = |n: usize, status: u16| {
        tracing::trace!(
            stream,
            request = %String::from_utf8_lossy(&payload),
            messages = n,
            status,
            micros = started.elapsed().as_micros() as u64,
            "direct get batch"
        );
    };
    let mut out = Vec::new();
    loop {
        let next = tokio::time::timeout(patience, answers.next()).await;
        let message = match next {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => {
                return Err(BrokerError::with_kind(
                    BrokerErrorKind::Unavailable,
                    "direct get batch",
                    "the stream did not answer in time",
                ));
            }
        };
        match message.status.map(|s| s.as_u16()) {
            None => out.push(parse(message)?),
            Some(204) => {
                trace(out.len(), 204);
                let pending = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Num-Pending"))
                    .and_then(|v| v.as_str().parse().ok())
                    .unwrap_or(0);
                return Ok((out, pending));
            }
            // Nothing matched.
            Some(404) => {
                trace(out.len(), 404);
                return Ok((out, 0));
            }
            Some(413) => {
                return Err(BrokerError::with_kind(
                    BrokerErrorKind::Other,
                    TOO_MANY,
                    "more than 1024 subjects match",
                ));
            }
            Some(code) => {
                return Err(status_error("direct get batch", code, message.description));
            }
        }
    }
}

/// The request timeout of the connection is not visible from the client: direct gets are
/// answered from memory or one block read, so a few seconds means the stream is gone.
fn broker_timeout() -> Duration {
    Duration::from_secs(5)
}

fn status_error(context: &'static str, code: u16, description: Option<String>) -> BrokerError {
    let kind = if code == 503 || code == 408 {
        BrokerErrorKind::Unavailable
    } else {
        BrokerErrorKind::Other
    };
    BrokerError::with_kind(
        kind,
        context,
        format!("status {code} {}", description.unwrap_or_default()),
    )
}

/// A direct-get answer: headers say where the message was stored.
fn parse(message: async_nats::Message) -> Result<StoredMessage, BrokerError> {
    let bad = |what: &str| {
        BrokerError::with_kind(
            BrokerErrorKind::Other,
            "direct get answer",
            format!("missing or bad {what} header"),
        )
    };
    let all = message.headers.unwrap_or_default();
    let get = |name: &str| all.get(name).map(|v| v.as_str().to_string());
    let subject = get("Nats-Subject").ok_or_else(|| bad("Nats-Subject"))?;
    let seq = get("Nats-Sequence")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("Nats-Sequence"))?;
    let time = get("Nats-Time-Stamp")
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| bad("Nats-Time-Stamp"))?;
    let mut headers = HeaderMap::new();
    for (name, values) in all.iter() {
        let name: &str = name.as_ref();
        if super::names::headers::is_jetstream_header(name)
            && !name.eq_ignore_ascii_case(super::names::headers::MSG_ID)
        {
            continue;
        }
        for value in values {
            headers.append(name, value.as_str());
        }
    }
    Ok(StoredMessage {
        subject,
        seq,
        time,
        headers,
        payload: message.payload,
    })
}
