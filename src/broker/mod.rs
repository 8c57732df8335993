//! Everything that knows NATS: names, stream and bucket definitions, destination
//! consumers, pulls, the embedded server, and error classification.

pub mod backward;
pub mod consumers;
pub mod credentials;
pub mod direct;
pub mod doorbell;
pub mod embedded;
pub mod error;
pub mod fill;
pub mod messages;
pub mod names;
pub mod pull;
pub mod setup;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream::Stream};
use async_nats::{Client, ConnectOptions};
use tracing::{info, warn};

pub use error::{BrokerError, BrokerErrorKind};
pub use names::Subjects;

/// How long start-up retries stream and bucket setup while JetStream is unavailable.
const SETUP_PATIENCE: Duration = Duration::from_secs(30);

use crate::config::Config;

/// The connection and every stream and bucket handle, made once at start. Cloned into
/// every request and task, so it is one `Arc`: the handles themselves carry their stream
/// info and cost dozens of allocations to clone.
#[derive(Clone)]
pub struct Broker(Arc<Handles>);

impl std::ops::Deref for Broker {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.0
    }
}

pub struct Handles {
    pub client: Client,
    pub js: jetstream::Context,
    pub subjects: Subjects,
    pub events: Stream,
    pub dlq: Stream,
    pub attempts: Stream,
    pub stats: Stream,
    pub destinations: kv::Store,
    pub idempotency: kv::Store,
    pub ratelimit: kv::Store,
    pub circuits: kv::Store,
    // Routing (docs/adr/0010): the delivery shards, `HS_DLV_<k>` at index k, and
    // whether they have room.
    pub shards: Vec<Stream>,
    pub fill: fill::ShardFill,
}

impl Broker {
    /// Connects (reconnecting forever afterwards) and creates or updates the streams and
    /// buckets.
    pub async fn connect(url: &str, cfg: &Config) -> Result<Self, BrokerError> {
        let mut options = ConnectOptions::new()
            .name("hookstream")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(cfg.request_timeout()))
            .max_reconnects(None)
            // Replies (PubAcks, KV reads) arrive under the service's own prefix, which
            // producers sharing the account cannot subscribe to (docs/adr/0007).
            .custom_inbox_prefix(&cfg.nats.inbox_prefix)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => warn!("disconnected from NATS"),
                    async_nats::Event::Connected => info!("connected to NATS"),
                    other => info!(event = %other, "NATS connection event"),
                }
            });
        if let Some(creds) = &cfg.nats.credentials_file {
            options = options
                .credentials_file(creds)
                .await
                .map_err(|e| BrokerError::new("reading NATS credentials", e))?;
        }
        // Credentials in the URL go to the client as options, so that the URL (logged by
        // the client) carries none.
        let (url, in_url) = credentials::split(url);
        options = match in_url {
            Some(credentials::UrlCredentials::UserPassword(user, password)) => {
                options.user_and_password(user, password)
            }
            Some(credentials::UrlCredentials::Token(token)) => options.token(token),
            None => options,
        };
        if let (Some(user), Some(password)) = (&cfg.nats.user, &cfg.nats.password) {
            options = options.user_and_password(user.clone(), password.expose().to_string());
        }
        // A comma-separated list names several servers of a cluster: the first start
        // then works while any one of them is up.
        let servers: Vec<&str> = url.split(',').map(str::trim).collect();
        let client = options.connect(servers).await.map_err(|e| {
            BrokerError::with_kind(BrokerErrorKind::Unavailable, "connecting to NATS", e)
        })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(cfg.request_timeout())
            .build(client.clone());
        let subjects = Subjects::new(&cfg.subject_prefix);

        // A server (or cluster) just started may not have a JetStream leader yet; retry
        // setup for a while instead of failing the start.
        let mut waited = Duration::ZERO;
        let handles = loop {
            match Box::pin(Self::set_up(&js, cfg, &subjects)).await {
                Ok(handles) => break handles,
                Err(e) if e.kind == BrokerErrorKind::Unavailable && waited < SETUP_PATIENCE => {
                    warn!(error = %e, "streams and buckets not ready; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    waited += Duration::from_secs(1);
                }
                Err(e) => return Err(e),
            }
        };
        let (events, dlq, attempts, stats, destinations, idempotency, ratelimit, circuits) =
            handles;
        // Routing (docs/adr/0010): shards and the router consumer, retried like the rest.
        let mut waited = Duration::ZERO;
        let shards = loop {
            let set_up = async {
                let shards = Box::pin(setup::ensure_delivery_streams(&js, cfg, &subjects)).await?;
                Box::pin(setup::ensure_router_consumer(&events)).await?;
                Ok::<_, BrokerError>(shards)
            };
            match set_up.await {
                Ok(shards) => break shards,
                Err(e) if e.kind == BrokerErrorKind::Unavailable && waited < SETUP_PATIENCE => {
                    warn!(error = %e, "delivery shards not ready; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    waited += Duration::from_secs(1);
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Self(Arc::new(Handles {
            client,
            js,
            subjects,
            events,
            dlq,
            attempts,
            stats,
            destinations,
            idempotency,
            ratelimit,
            circuits,
            shards,
            fill: fill::ShardFill::default(),
        })))
    }

    /// Creates or updates every stream and bucket, in the order of the `Broker` fields.
    #[allow(clippy::type_complexity)]
    async fn set_up(
        js: &jetstream::Context,
        cfg: &Config,
        subjects: &Subjects,
    ) -> Result<
        (
            Stream,
            Stream,
            Stream,
            Stream,
            kv::Store,
            kv::Store,
            kv::Store,
            kv::Store,
        ),
        BrokerError,
    > {
        let js = js.clone();
        // Boxed: eight setup futures inline would make this one too large for a thread's
        // stack in debug builds.
        let events = Box::pin(setup::ensure_stream(
            &js,
            setup::events_stream(cfg, subjects),
        ))
        .await?;
        let dlq = Box::pin(setup::ensure_stream(&js, setup::dlq_stream(cfg, subjects))).await?;
        let attempts = Box::pin(setup::ensure_stream(
            &js,
            setup::attempts_stream(cfg, subjects),
        ))
        .await?;
        let stats = Box::pin(setup::ensure_stream(
            &js,
            setup::stats_stream(cfg, subjects),
        ))
        .await?;
        let destinations =
            Box::pin(setup::ensure_bucket(&js, setup::destinations_bucket(cfg))).await?;
        let idempotency =
            Box::pin(setup::ensure_bucket(&js, setup::idempotency_bucket(cfg))).await?;
        let ratelimit = Box::pin(setup::ensure_bucket(&js, setup::ratelimit_bucket(cfg))).await?;
        let circuits = Box::pin(setup::ensure_bucket(&js, setup::circuit_bucket(cfg))).await?;
        Ok((
            events,
            dlq,
            attempts,
            stats,
            destinations,
            idempotency,
            ratelimit,
            circuits,
        ))
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Readiness: connected, and JetStream answers for the events stream.
    pub async fn check_ready(&self) -> Result<(), BrokerError> {
        if !self.is_connected() {
            return Err(BrokerError::with_kind(
                BrokerErrorKind::Unavailable,
                "checking readiness",
                "not connected to NATS",
            ));
        }
        self.js
            .get_stream_no_info(names::EVENTS_STREAM)
            .await
            .map_err(|e| BrokerError::new("checking readiness", e))?
            .get_info()
            .await
            .map(drop)
            .map_err(|e| BrokerError::new("checking readiness", e))
    }

    // --- Routing (docs/adr/0010) ---
    /// How many delivery shards there are.
    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// The shard of a destination's deliveries.
    pub fn shard_of(&self, destination: &str) -> u32 {
        names::shard_of(destination, self.shard_count())
    }

    /// The shard stream holding a destination's deliveries and its consumer.
    pub fn shard_stream(&self, destination: &str) -> &Stream {
        &self.shards[self.shard_of(destination) as usize]
    }
    /// Refuses new events while a delivery shard is full (`fill.rs`).
    pub fn check_delivery_room(&self) -> Result<(), BrokerError> {
        match self.fill.full_shard(self) {
            None => Ok(()),
            Some(shard) => Err(BrokerError::with_kind(
                BrokerErrorKind::StorageFull,
                "accepting an event",
                format!(
                    "delivery shard {shard} is full (events.delivery_max_bytes): deliveries wait for their destinations"
                ),
            )),
        }
    }

    /// A destination's deliveries waiting: (not handed out yet, handed out and not
    /// acked). From its consumer when it has one, else the shard's count for its subject.
    pub async fn destination_backlog(&self, destination: &str) -> (u64, u64) {
        let shard = self.shard_stream(destination);
        let Ok(id) = crate::model::DestinationId::parse(destination.to_string()) else {
            return (0, 0);
        };
        if let Ok(info) = shard.consumer_info(names::consumer_name(&id)).await {
            return (info.num_pending, info.num_ack_pending as u64);
        }
        let subject = self
            .subjects
            .delivery(self.shard_of(destination), destination);
        let waiting = match shard.info_with_subjects(&subject).await {
            Ok(mut subjects) => {
                use futures::TryStreamExt;
                subjects
                    .try_next()
                    .await
                    .ok()
                    .flatten()
                    .map_or(0, |(_, n)| n as u64)
            }
            Err(_) => 0,
        };
        (waiting, 0)
    }
    // --- end routing ---

    /// One subscription for the answers of every pull this worker sends (`pull.rs`).
    pub async fn pull_mux(
        &self,
        token: tokio_util::sync::CancellationToken,
    ) -> Result<
        (
            pull::PullMux,
            tokio::sync::mpsc::UnboundedReceiver<pull::Orphan>,
        ),
        BrokerError,
    > {
        pull::PullMux::start(self.js.clone(), token).await
    }
}
