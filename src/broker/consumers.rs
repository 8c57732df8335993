//! One durable pull consumer per destination (`dest_<id>` on `HS_EVENTS`): its desired
//! configuration, and create / update / delete / list.
//!
//! The configuration carries a digest of the fields derived from the destination in its
//! metadata, so a replica that starts against 10,000 destinations can tell from one paged
//! listing which consumers already match and touch none of them.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use futures::TryStreamExt;
use time::OffsetDateTime;

use super::error::BrokerError;
use super::names::{self, Subjects};
use crate::model::Destination;
use crate::model::pattern::consumer_filters;

pub const SPEC_METADATA_KEY: &str = "hs_spec";
const DESTINATION_METADATA_KEY: &str = "hs_destination";

/// The consumer a destination should have.
pub fn desired_config(
    destination: &Destination,
    subjects: &Subjects,
    ack_wait_margin: Duration,
) -> pull::Config {
    let (patterns, _exact) = consumer_filters(&destination.event_types);
    let mut filter_subjects: Vec<String> = patterns
        .iter()
        .map(|p| subjects.event_filter(&destination.tenant, p))
        .collect();
    filter_subjects.push(subjects.directed_filter(&destination.id));
    let max_ack_pending = if destination.ordered {
        1
    } else {
        i64::from(destination.max_in_flight.max(1))
    };
    let ack_wait = Duration::from_millis(destination.timeout_ms) + ack_wait_margin;
    // A paused or disabled destination's consumer is paused too, so that nothing is
    // handed out (and redelivered) while nobody may send.
    let paused = !destination.is_active();

    let mut hasher = DefaultHasher::new();
    (&filter_subjects, max_ack_pending, ack_wait, paused).hash(&mut hasher);
    let spec = format!("{:016x}", hasher.finish());

    pull::Config {
        durable_name: Some(names::consumer_name(&destination.id)),
        description: Some(format!("hookstream destination {}", destination.id)),
        // A destination receives the events published after it was created.
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        // Unlimited on purpose: hookstream counts attempts itself (HS_ATTEMPTS), because
        // redeliveries caused by throttling, open circuits or crashes must not use up a
        // destination's attempts, and a message that hits a server-side max_deliver is
        // neither delivered nor dead-lettered. See docs/adr/0002.
        max_deliver: -1,
        filter_subjects,
        max_ack_pending,
        metadata: HashMap::from([
            (SPEC_METADATA_KEY.to_string(), spec),
            (
                DESTINATION_METADATA_KEY.to_string(),
                destination.id.to_string(),
            ),
        ]),
        pause_until: paused.then(far_future),
        ..Default::default()
    }
}

fn far_future() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::days(365 * 100)
}

pub fn spec_of(config: &pull::Config) -> Option<&str> {
    config.metadata.get(SPEC_METADATA_KEY).map(String::as_str)
}

/// Creates the consumer or updates it in place (JetStream's create-or-update action).
/// Answers whether the consumer is paused now.
pub async fn upsert(stream: &Stream, config: pull::Config) -> Result<bool, BrokerError> {
    let consumer = stream
        .create_consumer(config)
        .await
        .map_err(|e| BrokerError::new("creating or updating destination consumer", e))?;
    Ok(consumer.cached_info().paused)
}

pub async fn set_paused(stream: &Stream, name: &str, paused: bool) -> Result<(), BrokerError> {
    let result = if paused {
        stream.pause_consumer(name, far_future()).await
    } else {
        stream.resume_consumer(name).await
    };
    result
        .map(drop)
        .map_err(|e| BrokerError::new("pausing or resuming destination consumer", e))
}

/// Pauses the consumer until `until`, when the server resumes it by itself (an open
/// circuit's cool-down).
pub async fn pause_until(
    stream: &Stream,
    name: &str,
    until: chrono::DateTime<chrono::Utc>,
) -> Result<(), BrokerError> {
    let until = OffsetDateTime::from_unix_timestamp_nanos(i128::from(
        until.timestamp_nanos_opt().unwrap_or(i64::MAX),
    ))
    .unwrap_or_else(|_| far_future());
    stream
        .pause_consumer(name, until)
        .await
        .map(drop)
        .map_err(|e| BrokerError::new("pausing destination consumer", e))
}

pub async fn delete(stream: &Stream, name: &str) -> Result<(), BrokerError> {
    match stream.delete_consumer(name).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let err = BrokerError::new("deleting destination consumer", e);
            if err.kind == super::error::BrokerErrorKind::NotFound {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}

/// Everything the workers need from a listing of the destination consumers.
#[derive(Debug, Clone)]
pub struct ConsumerState {
    pub name: String,
    pub spec: Option<String>,
    pub num_pending: u64,
    pub num_ack_pending: usize,
    pub paused: bool,
    /// When the consumer was created: a consumer younger than a destination write's
    /// round trip may belong to a destination the worker has not heard of yet.
    pub created: time::OffsetDateTime,
}

/// Lists every destination consumer: one request per 256 consumers.
pub async fn list(stream: &Stream) -> Result<Vec<ConsumerState>, BrokerError> {
    let infos: Vec<consumer::Info> = stream
        .consumers()
        .try_collect()
        .await
        .map_err(|e| BrokerError::new("listing consumers", e))?;
    Ok(infos
        .into_iter()
        .filter(|i| names::destination_of_consumer(&i.name).is_some())
        .map(|i| ConsumerState {
            spec: i.config.metadata.get(SPEC_METADATA_KEY).cloned(),
            name: i.name,
            num_pending: i.num_pending,
            num_ack_pending: i.num_ack_pending,
            paused: i.paused,
            created: i.created,
        })
        .collect())
}

/// A destination's backlog: `(pending, retrying)`, events not handed out yet and those
/// handed out and not finished. Zero when it has no consumer (nothing waits for it).
pub async fn backlog(stream: &Stream, destination: &crate::model::DestinationId) -> (u64, u64) {
    match stream
        .consumer_info(names::consumer_name(destination))
        .await
    {
        Ok(info) => (info.num_pending, info.num_ack_pending as u64),
        Err(_) => (0, 0),
    }
}
