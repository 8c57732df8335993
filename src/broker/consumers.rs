//! Destination consumers: `dest_<id>` on the destination's delivery shard `HS_DLV_<k>`,
//! with one literal filter `hs.dlv.<k>.<id>` (docs/adr/0010). A consumer exists while its
//! destination has deliveries to make: a worker creates it when it finds work, and
//! nats-server removes it after `delivery.consumer_idle_secs` without a pull. Deleting it
//! never deletes deliveries (WorkQueue keeps what is not acked).
//!
//! Also the listing of the consumers of the layout before routing (`dest_<id>` on
//! `HS_EVENTS`), which the upgrade drains and removes.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use futures::TryStreamExt;
use time::OffsetDateTime;

use super::error::{BrokerError, BrokerErrorKind};
use super::names::{self, Subjects};
use crate::model::Destination;

const DESTINATION_METADATA_KEY: &str = "hs_destination";

/// What a destination's consumer is derived from besides the destination.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerPolicy {
    /// Added to the destination's timeout to give the ack wait.
    pub ack_wait_margin: Duration,
    /// The server removes the consumer after this long without a pull.
    pub idle: Duration,
}

impl ConsumerPolicy {
    /// The ack wait of a destination: its request timeout plus room to record the attempt.
    pub fn ack_wait(&self, destination: &Destination) -> Duration {
        Duration::from_millis(destination.timeout_ms) + self.ack_wait_margin
    }
}

/// The consumer a destination should have on shard `shard`.
pub fn desired_config(
    destination: &Destination,
    subjects: &Subjects,
    shard: u32,
    policy: ConsumerPolicy,
) -> pull::Config {
    let max_ack_pending = if destination.ordered {
        1
    } else {
        i64::from(destination.max_in_flight.max(1))
    };
    // A paused or disabled destination's consumer is paused too, so that nothing is
    // handed out (and redelivered) while nobody may send.
    let paused = !destination.is_active();
    pull::Config {
        durable_name: Some(names::consumer_name(&destination.id)),
        description: Some(format!("hookstream destination {}", destination.id)),
        // WorkQueue: every delivery still waiting, in the order the router stored them.
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: policy.ack_wait(destination),
        // Unlimited on purpose: hookstream counts attempts itself (HS_ATTEMPTS), because
        // redeliveries caused by throttling, open circuits or crashes must not use up a
        // destination's attempts, and a message that hits a server-side max_deliver is
        // neither delivered nor dead-lettered. See docs/adr/0002.
        max_deliver: -1,
        // One literal subject: nats-server's single-filter path (docs/adr/0010).
        filter_subject: subjects.delivery(shard, destination.id.as_str()),
        max_ack_pending,
        inactive_threshold: policy.idle,
        metadata: HashMap::from([(
            DESTINATION_METADATA_KEY.to_string(),
            destination.id.to_string(),
        )]),
        pause_until: paused.then(far_future),
        // The consumer's state (ack floor, redeliveries) in memory, not in a file: with
        // file state nats-server rewrote a state file per consumer on every ack burst,
        // 80 % of its CPU at 1,000 destinations (perf, `make bench` drain_1000_routed:
        // 92.5 s of nats-server CPU per 100k deliveries with file state, 24.6 s with
        // memory state). Nothing is lost with it: the deliveries are in the shard
        // (WorkQueue, file storage) until acked, attempts are counted in HS_ATTEMPTS
        // (ADR 0002), and a consumer lost with a server restart is created again by the
        // next pull or shard scan, its unacked deliveries handed out again.
        memory_storage: true,
        ..Default::default()
    }
}

fn far_future() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::days(365 * 100)
}

/// Creates the consumer or updates it in place (JetStream's create-or-update action);
/// several replicas doing it at once with the same configuration agree. Answers whether
/// the consumer is paused now.
pub async fn upsert(stream: &Stream, config: pull::Config) -> Result<bool, BrokerError> {
    let consumer = match stream.create_consumer(config.clone()).await {
        Ok(consumer) => consumer,
        Err(e) => {
            let e = BrokerError::new("creating or updating destination consumer", e);
            if e.kind != BrokerErrorKind::StorageTypeFixed {
                return Err(e);
            }
            // Made with file state by an earlier version: replaced.
            replace(stream, &config).await?;
            return Ok(config.pause_until.is_some());
        }
    };
    Ok(consumer.cached_info().paused)
}

/// Deletes the consumer and creates it with `config`. Its deliveries stay in the shard
/// (WorkQueue); one handed out and not acked yet is handed out again.
async fn replace(stream: &Stream, config: &pull::Config) -> Result<(), BrokerError> {
    let name = config.durable_name.clone().unwrap_or_default();
    tracing::info!(consumer = %name, "replacing a destination consumer with file state by one with memory state");
    delete(stream, &name).await?;
    stream
        .create_consumer(config.clone())
        .await
        .map(drop)
        .map_err(|e| BrokerError::new("creating destination consumer", e))
}

/// Updates the consumer if it exists (a destination changed); a missing one is left
/// missing: it is created with the new configuration when work comes.
pub async fn update_if_present(stream: &Stream, config: pull::Config) -> Result<(), BrokerError> {
    let name = config.durable_name.clone().unwrap_or_default();
    let want_paused = config.pause_until.is_some();
    match stream.update_consumer(config.clone()).await {
        Ok(consumer) => {
            // An update does not change a consumer's pause state (only its creation does).
            if consumer.cached_info().paused != want_paused {
                set_paused(stream, &name, want_paused).await?;
            }
            Ok(())
        }
        Err(e) => {
            use async_nats::jetstream::ErrorCode;
            use async_nats::jetstream::stream::ConsumerUpdateErrorKind as Kind;
            // async-nats keeps the server's answer in the kind, not in the source.
            let missing = match e.kind() {
                Kind::DoesNotExist => true,
                Kind::JetStream(js) => js.error_code() == ErrorCode::CONSUMER_DOES_NOT_EXIST,
                _ => false,
            };
            if missing {
                return Ok(());
            }
            let e = BrokerError::new("updating destination consumer", e);
            if e.kind == BrokerErrorKind::StorageTypeFixed {
                // Made with file state by an earlier version: replaced.
                replace(stream, &config).await
            } else {
                Err(e)
            }
        }
    }
}

pub async fn set_paused(stream: &Stream, name: &str, paused: bool) -> Result<(), BrokerError> {
    let result = if paused {
        stream.pause_consumer(name, far_future()).await
    } else {
        stream.resume_consumer(name).await
    };
    not_found_is_fine(
        result
            .map(drop)
            .map_err(|e| BrokerError::new("pausing or resuming destination consumer", e)),
    )
}

/// Pauses the consumer until `until`, when the server resumes it by itself (an open
/// circuit's cool-down). A destination without a consumer has nothing to pause.
pub async fn pause_until(
    stream: &Stream,
    name: &str,
    until: chrono::DateTime<chrono::Utc>,
) -> Result<(), BrokerError> {
    let until = OffsetDateTime::from_unix_timestamp_nanos(i128::from(
        until.timestamp_nanos_opt().unwrap_or(i64::MAX),
    ))
    .unwrap_or_else(|_| far_future());
    not_found_is_fine(
        stream
            .pause_consumer(name, until)
            .await
            .map(drop)
            .map_err(|e| BrokerError::new("pausing destination consumer", e)),
    )
}

pub async fn delete(stream: &Stream, name: &str) -> Result<(), BrokerError> {
    not_found_is_fine(
        stream
            .delete_consumer(name)
            .await
            .map(drop)
            .map_err(|e| BrokerError::new("deleting destination consumer", e)),
    )
}

fn not_found_is_fine(result: Result<(), BrokerError>) -> Result<(), BrokerError> {
    match result {
        Err(e) if e.kind == BrokerErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// A consumer of the layout before routing: `dest_<id>` on `HS_EVENTS`.
#[derive(Debug, Clone)]
pub struct OldConsumer {
    pub name: String,
    pub num_pending: u64,
    pub num_ack_pending: usize,
}

/// Lists the destination consumers left on `HS_EVENTS` by the layout before routing.
pub async fn list_old(events: &Stream) -> Result<Vec<OldConsumer>, BrokerError> {
    let infos: Vec<consumer::Info> = events
        .consumers()
        .try_collect()
        .await
        .map_err(|e| BrokerError::new("listing consumers", e))?;
    Ok(infos
        .into_iter()
        .filter(|i| names::destination_of_consumer(&i.name).is_some())
        .map(|i| OldConsumer {
            name: i.name,
            num_pending: i.num_pending,
            num_ack_pending: i.num_ack_pending,
        })
        .collect())
}
