//! The definitions of hookstream's streams and buckets, and their idempotent creation.
//! `nats/streams.md` documents the same definitions for operators; keep them in step.

use std::time::Duration;

use async_nats::jetstream::{
    self, kv,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use tracing::{info, warn};

use super::error::{BrokerError, BrokerErrorKind};
use super::names::{self, Subjects};
use crate::config::Config;

pub fn events_stream(cfg: &Config, subjects: &Subjects) -> stream::Config {
    stream::Config {
        name: names::EVENTS_STREAM.into(),
        description: Some("hookstream: every accepted event".into()),
        subjects: subjects.events_wildcards(),
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: cfg.events.max_age,
        max_bytes: cfg.events.max_bytes,
        // Full means full: a publish is refused (the API answers 503), never an accepted
        // event silently dropped to make room.
        discard: DiscardPolicy::New,
        duplicate_window: cfg.events.duplicate_window,
        // nats-server replaces -1 with 1,000, which would cap the number of destinations.
        max_consumers: cfg.events.max_consumers,
        num_replicas: cfg.nats.replicas,
        allow_direct: true,
        ..Default::default()
    }
}

pub fn dlq_stream(cfg: &Config, subjects: &Subjects) -> stream::Config {
    stream::Config {
        name: names::DLQ_STREAM.into(),
        description: Some("hookstream: dead letters, one per (event, destination)".into()),
        subjects: vec![subjects.dlq_wildcard()],
        storage: StorageType::File,
        max_age: cfg.dlq.max_age,
        max_bytes: cfg.dlq.max_bytes,
        // A full DLQ refuses the dead letter; the worker keeps the original unacked and
        // tries again, so nothing is lost to make room.
        discard: DiscardPolicy::New,
        duplicate_window: cfg.events.duplicate_window,
        num_replicas: cfg.nats.replicas,
        allow_direct: true,
        ..Default::default()
    }
}

pub fn attempts_stream(cfg: &Config, subjects: &Subjects) -> stream::Config {
    stream::Config {
        name: names::ATTEMPTS_STREAM.into(),
        description: Some("hookstream: one record per delivery attempt".into()),
        subjects: vec![subjects.attempts_wildcard()],
        storage: StorageType::File,
        max_age: cfg.attempts.max_age,
        max_bytes: cfg.attempts.max_bytes,
        // History: the oldest records make room for new ones.
        discard: DiscardPolicy::Old,
        num_replicas: cfg.nats.replicas,
        allow_direct: true,
        ..Default::default()
    }
}

pub fn stats_stream(cfg: &Config, subjects: &Subjects) -> stream::Config {
    stream::Config {
        name: names::STATS_STREAM.into(),
        description: Some("hookstream: delivery counters per destination".into()),
        subjects: vec![subjects.stats_wildcard()],
        storage: StorageType::File,
        // A counter stream keeps the running total in the last message of each subject.
        allow_message_counter: true,
        max_messages_per_subject: 1,
        num_replicas: cfg.nats.replicas,
        allow_direct: true,
        ..Default::default()
    }
}

pub fn destinations_bucket(cfg: &Config) -> kv::Config {
    kv::Config {
        bucket: names::DESTINATIONS_BUCKET.into(),
        description: "hookstream: destination configs".into(),
        history: 5,
        max_value_size: 256 * 1024,
        storage: StorageType::File,
        num_replicas: cfg.nats.replicas,
        ..Default::default()
    }
}

pub fn idempotency_bucket(cfg: &Config) -> kv::Config {
    kv::Config {
        bucket: names::IDEMPOTENCY_BUCKET.into(),
        description: "hookstream: accepted event ids (Idempotency-Key)".into(),
        history: 1,
        max_age: cfg.idempotency.ttl,
        max_value_size: 1024,
        storage: StorageType::File,
        num_replicas: cfg.nats.replicas,
        ..Default::default()
    }
}

/// Rate-limit state: one small value per limited destination or tenant, rewritten a few
/// times a second while busy. Keys unused for an hour vanish (an absent key is a full
/// burst, which an hour of silence has earned anyway).
pub fn ratelimit_bucket(cfg: &Config) -> kv::Config {
    kv::Config {
        bucket: names::RATELIMIT_BUCKET.into(),
        description: "hookstream: shared rate-limit state (GCRA)".into(),
        history: 1,
        max_age: Duration::from_secs(3600),
        max_value_size: 1024,
        storage: StorageType::File,
        num_replicas: cfg.nats.replicas,
        ..Default::default()
    }
}

/// Circuit state of destinations that failed lately. An open circuit is rewritten at
/// least every cool-down; a closed one left alone for a day vanishes.
pub fn circuit_bucket(cfg: &Config) -> kv::Config {
    kv::Config {
        bucket: names::CIRCUIT_BUCKET.into(),
        description: "hookstream: shared circuit-breaker state".into(),
        history: 1,
        max_age: Duration::from_secs(86_400),
        max_value_size: 1024,
        storage: StorageType::File,
        num_replicas: cfg.nats.replicas,
        ..Default::default()
    }
}

/// API keys (`src/access/store.rs`): one small record per tenant or ingest key, the key
/// itself never, only its hash. Watched by every replica.
pub fn api_keys_bucket(cfg: &Config) -> kv::Config {
    kv::Config {
        bucket: names::API_KEYS_BUCKET.into(),
        description: "hookstream: API keys (hashes only)".into(),
        history: 1,
        max_value_size: 4096,
        storage: StorageType::File,
        num_replicas: cfg.nats.replicas,
        ..Default::default()
    }
}

/// Files being ingested and ingested: one record per file (progress, counts, lease) and
/// its kept rejected lines. A record outlives its file by `ingest.files_retention_secs`,
/// so the same content dropped again within that time is recognised.
pub fn files_bucket(cfg: &Config) -> kv::Config {
    kv::Config {
        bucket: names::FILES_BUCKET.into(),
        description: "hookstream: files ingested and their progress".into(),
        history: 1,
        max_age: cfg.ingest.files_retention,
        max_value_size: 1024 * 1024,
        storage: StorageType::File,
        num_replicas: cfg.nats.replicas,
        ..Default::default()
    }
}

/// Uploaded files, kept until their ingest is done (then deleted). No age limit: an
/// upload waits for a replica however long all of them are down.
pub fn uploads_store(cfg: &Config) -> jetstream::object_store::Config {
    jetstream::object_store::Config {
        bucket: names::UPLOADS_STORE.into(),
        description: Some("hookstream: uploaded files waiting for their ingest".into()),
        storage: StorageType::File,
        num_replicas: cfg.nats.replicas,
        ..Default::default()
    }
}

/// Gets the object store, creating it the first time (several replicas starting at once:
/// a lost creation race is resolved by looking it up again).
pub async fn ensure_object_store(
    js: &jetstream::Context,
    want: jetstream::object_store::Config,
) -> Result<jetstream::object_store::ObjectStore, BrokerError> {
    for _ in 0..5 {
        if let Ok(store) = js.get_object_store(&want.bucket).await {
            return Ok(store);
        }
        match js.create_object_store(want.clone()).await {
            Ok(store) => {
                info!(store = %want.bucket, "created object store");
                return Ok(store);
            }
            Err(e) => {
                let err = BrokerError::new("creating object store", e);
                if err.kind == BrokerErrorKind::Unavailable {
                    return Err(err);
                }
            }
        }
    }
    Err(BrokerError::with_kind(
        BrokerErrorKind::Conflict,
        "creating object store",
        format!("object store {} could not be created", want.bucket),
    ))
}

/// Creates the stream, or updates it when a field hookstream owns differs. Safe when
/// several replicas start at once: a lost creation race is resolved by the next round.
pub async fn ensure_stream(
    js: &jetstream::Context,
    want: stream::Config,
) -> Result<stream::Stream, BrokerError> {
    for _ in 0..5 {
        match js.get_stream(&want.name).await {
            Ok(mut existing) => {
                let have = existing
                    .info()
                    .await
                    .map_err(|e| BrokerError::new("reading stream info", e))?
                    .config
                    .clone();
                if !same_stream(&have, &want) {
                    info!(stream = %want.name, "updating stream configuration");
                    if let Err(e) = js.update_stream(&want).await {
                        let err = BrokerError::new("updating stream", e);
                        if err.kind == BrokerErrorKind::Unavailable {
                            return Err(err);
                        }
                        // Some fields cannot change on a live stream (e.g. storage); keep
                        // serving with the stream as it is and say so.
                        warn!(stream = %want.name, error = %err, "stream keeps its old configuration");
                    }
                }
                return Ok(existing);
            }
            Err(e) => {
                let err = BrokerError::new("looking up stream", e);
                if err.kind != BrokerErrorKind::NotFound {
                    return Err(err);
                }
            }
        }
        match js.create_stream(want.clone()).await {
            Ok(stream) => {
                info!(stream = %want.name, "created stream");
                return Ok(stream);
            }
            Err(e) => {
                let err = BrokerError::new("creating stream", e);
                if err.kind != BrokerErrorKind::Conflict {
                    return Err(err);
                }
            }
        }
    }
    Err(BrokerError::with_kind(
        BrokerErrorKind::Conflict,
        "creating stream",
        format!("stream {} kept changing under us", want.name),
    ))
}

fn same_stream(have: &stream::Config, want: &stream::Config) -> bool {
    let mut have_subjects = have.subjects.clone();
    let mut want_subjects = want.subjects.clone();
    have_subjects.sort();
    want_subjects.sort();
    have_subjects == want_subjects
        && have.max_age == want.max_age
        && have.max_bytes.max(0) == want.max_bytes.max(0)
        && have.discard == want.discard
        && (want.duplicate_window.is_zero() || have.duplicate_window == want.duplicate_window)
        && have.max_consumers.max(0) == want.max_consumers.max(0)
        && have.num_replicas == want.num_replicas
        && have.allow_direct == want.allow_direct
        // The server reports "unlimited" as -1 where the request said 0.
        && have.max_messages_per_subject.max(0) == want.max_messages_per_subject.max(0)
}

/// Creates the bucket, or updates its limits, like `ensure_stream`.
pub async fn ensure_bucket(
    js: &jetstream::Context,
    want: kv::Config,
) -> Result<kv::Store, BrokerError> {
    for _ in 0..5 {
        if let Ok(store) = js.get_key_value(&want.bucket).await {
            let mut stream = js
                .get_stream(format!("KV_{}", want.bucket))
                .await
                .map_err(|e| BrokerError::new("looking up bucket stream", e))?;
            let have = stream
                .info()
                .await
                .map_err(|e| BrokerError::new("reading bucket info", e))?
                .config
                .clone();
            let differs = have.max_age != want.max_age
                || have.num_replicas != want.num_replicas.max(1)
                || have.max_messages_per_subject.max(0) != want.history.max(0);
            if differs {
                info!(bucket = %want.bucket, "updating bucket configuration");
                if let Err(e) = js.update_key_value(want.clone()).await {
                    warn!(bucket = %want.bucket, error = %e, "bucket keeps its old configuration");
                }
            }
            return Ok(store);
        }
        match js.create_key_value(want.clone()).await {
            Ok(store) => {
                info!(bucket = %want.bucket, "created bucket");
                return Ok(store);
            }
            Err(e) => {
                let err = BrokerError::new("creating bucket", e);
                if err.kind == BrokerErrorKind::Unavailable {
                    return Err(err);
                }
                // Lost a creation race with another replica: look it up again.
            }
        }
    }
    Err(BrokerError::with_kind(
        BrokerErrorKind::Conflict,
        "creating bucket",
        format!("bucket {} could not be created", want.bucket),
    ))
}

// --- Routing (docs/adr/0010): delivery shards and the router consumer. ---

/// Shard `k` of the deliveries still to make: WorkQueue (a delivery is removed when it
/// is acked, delivered or dead-lettered), bounded, and never dropping to make room.
pub fn delivery_stream(cfg: &Config, subjects: &Subjects, shard: u32) -> stream::Config {
    stream::Config {
        name: names::delivery_stream(shard),
        description: Some(format!("hookstream: deliveries to make, shard {shard}")),
        subjects: vec![subjects.delivery_shard_wildcard(shard)],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        // A delivery lives no longer than its event would on HS_EVENTS.
        max_age: cfg.events.max_age,
        max_bytes: cfg.events.delivery_max_bytes,
        // Full means full: the router keeps the event and tries again.
        discard: DiscardPolicy::New,
        // One destination's backlog cannot fill the shard: past its limit the server
        // refuses that destination's new deliveries only (the router dead-letters them,
        // `backlog_full`), and routing goes on for the others.
        max_messages_per_subject: match cfg.events.delivery_max_per_destination {
            0 => -1,
            n => n,
        },
        discard_new_per_subject: cfg.events.delivery_max_per_destination > 0,
        duplicate_window: cfg.events.duplicate_window,
        max_consumers: cfg.events.max_consumers,
        num_replicas: cfg.nats.replicas,
        allow_direct: true,
        metadata: std::collections::HashMap::from([(
            names::SHARDS_METADATA_KEY.to_string(),
            cfg.events.delivery_shards.to_string(),
        )]),
        ..Default::default()
    }
}

/// Creates or updates every shard. The number of shards is fixed when they are first
/// created (a destination's shard is a hash modulo that number): a configuration that
/// disagrees with the existing streams is refused with the reason.
pub async fn ensure_delivery_streams(
    js: &jetstream::Context,
    cfg: &Config,
    subjects: &Subjects,
) -> Result<Vec<stream::Stream>, BrokerError> {
    let want = cfg.events.delivery_shards;
    match js.get_stream(names::delivery_stream(0)).await {
        Ok(mut first) => {
            let info = first
                .info()
                .await
                .map_err(|e| BrokerError::new("reading delivery shard info", e))?;
            let have = info
                .config
                .metadata
                .get(names::SHARDS_METADATA_KEY)
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(have) = have
                && have != want
            {
                return Err(BrokerError::with_kind(
                    BrokerErrorKind::Other,
                    "checking the delivery shards",
                    format!(
                        "events.delivery_shards is {want} but the delivery streams HS_DLV_0 … HS_DLV_{} were created with {have}; \
                         the shard count is fixed at first creation (a destination's deliveries are found by hash modulo that count): \
                         set events.delivery_shards = {have}",
                        have - 1
                    ),
                ));
            }
        }
        Err(e) => {
            let err = BrokerError::new("looking up delivery shard", e);
            if err.kind != BrokerErrorKind::NotFound {
                return Err(err);
            }
        }
    }
    let mut shards = Vec::with_capacity(want as usize);
    for k in 0..want {
        shards.push(Box::pin(ensure_stream(js, delivery_stream(cfg, subjects, k))).await?);
    }
    Ok(shards)
}

/// How long an event handed to the router may stay unacked before it is handed out again.
pub const ROUTER_ACK_WAIT: Duration = Duration::from_secs(6);

/// How long the pinned router may stop pulling before another replica takes over.
pub const ROUTER_PIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The router consumer: durable, no filter, one pinned client at a time (the others are
/// on standby and take over `ROUTER_PIN_TIMEOUT` after it stops pulling).
pub fn router_consumer(
    start: jetstream::consumer::DeliverPolicy,
) -> jetstream::consumer::pull::Config {
    jetstream::consumer::pull::Config {
        durable_name: Some(names::ROUTER_CONSUMER.into()),
        description: Some("hookstream: routes every event to its destinations' shards".into()),
        deliver_policy: start,
        // One ack per window settles all of it (docs/adr/0019). A router acks only a
        // window that continues from its floor (`router/floor.rs`), so an ack never
        // settles events that another router pulled and did not route.
        ack_policy: jetstream::consumer::AckPolicy::All,
        // Short: after a router dies, its unacked events are routed again by the next
        // one this long after (a slow window keeps its events with progress acks).
        ack_wait: ROUTER_ACK_WAIT,
        max_deliver: -1,
        max_ack_pending: 20_000,
        priority_policy: jetstream::consumer::PriorityPolicy::PinnedClient,
        priority_groups: vec![names::ROUTER_GROUP.into()],
        priority_timeout: ROUTER_PIN_TIMEOUT,
        ..Default::default()
    }
}

/// Creates the router consumer unless it exists. On a new stream it starts at the first
/// event; after the router consumer of an earlier version (explicit acks, `hs_router`)
/// right after that one's ack floor, which is then removed; on a stream that already
/// holds events without either (an upgrade from per-destination consumers, which keep
/// routing what they hold: `router/upgrade.rs`) at the next one.
pub async fn ensure_router_consumer(events: &stream::Stream) -> Result<(), BrokerError> {
    use jetstream::consumer::DeliverPolicy;
    if router_consumer_info(events, names::ROUTER_CONSUMER)
        .await?
        .is_some()
    {
        return remove_legacy_router(events).await;
    }
    let start = match router_consumer_info(events, names::LEGACY_ROUTER_CONSUMER).await? {
        // Events it acked above its floor are routed again with the same message ids:
        // the shards drop the copies.
        Some(legacy) => DeliverPolicy::ByStartSequence {
            start_sequence: legacy.ack_floor.stream_sequence + 1,
        },
        None => {
            let info = events
                .get_info()
                .await
                .map_err(|e| BrokerError::new("reading events stream info", e))?;
            if info.state.messages == 0 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: info.state.last_sequence + 1,
                }
            }
        }
    };
    info!(?start, "creating the router consumer");
    match events.create_consumer(router_consumer(start)).await {
        Ok(_) => {}
        Err(e) => {
            let err = BrokerError::new("creating the router consumer", e);
            // Another replica created it first (with its own start, equally valid).
            if err.kind != BrokerErrorKind::Conflict {
                return Err(err);
            }
        }
    }
    remove_legacy_router(events).await
}

async fn router_consumer_info(
    events: &stream::Stream,
    name: &str,
) -> Result<Option<jetstream::consumer::Info>, BrokerError> {
    match events.consumer_info(name).await {
        Ok(info) => Ok(Some(info)),
        Err(e) => {
            let err = BrokerError::new("looking up the router consumer", e);
            if err.kind == BrokerErrorKind::NotFound {
                Ok(None)
            } else {
                Err(err)
            }
        }
    }
}

/// Removes the router consumer of an earlier version once this one exists. Replicas of
/// that version still running find no consumer and stop routing (they keep delivering);
/// the events they held unacked are routed by this consumer, which starts below them.
async fn remove_legacy_router(events: &stream::Stream) -> Result<(), BrokerError> {
    match events.delete_consumer(names::LEGACY_ROUTER_CONSUMER).await {
        Ok(_) => {
            info!(
                consumer = names::LEGACY_ROUTER_CONSUMER,
                "router consumer of an earlier version removed"
            );
            Ok(())
        }
        Err(e) => {
            let err = BrokerError::new("removing the earlier router consumer", e);
            if err.kind == BrokerErrorKind::NotFound {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}
// --- end routing ---
