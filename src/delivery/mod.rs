//! Delivery: workers that pull from destination consumers and send signed webhooks.
//!
//! - `dispatcher` drains destinations that have work (`pulls`: a drain's view of its
//!   consumer; `timers`: the retry times it scheduled), `attempt` handles one message,
//!   `outcome` decides what an answer leads to, `request` builds the signed request,
//! - `backlog` scans the delivery shards for destinations with deliveries waiting,
//! - `dead_letter` is the one path that stores and counts a dead letter,
//! - `sender`, `signer`, `retry`, `template` are the HTTP side; attempt records are kept
//!   by `history`,
//! - `stats` sums delivery counters across replicas.
//!
//! Work is announced by the router's doorbell (`broker/doorbell.rs`), by this worker's own
//! retry times and by the shard scan (docs/adr/0010). Destination state comes from
//! `destinations/`; nothing here knows axum or the router.

pub mod attempt;
pub mod backlog;
pub mod dead_letter;
pub mod dispatcher;
mod http_client;
pub mod outcome;
mod pulls;
pub mod request;
pub mod retry;
pub mod sender;
pub mod signer;
pub mod stats;
pub mod template;
mod timers;

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::{Broker, BrokerError, BrokerErrorKind, doorbell, names};
use crate::config::Config;
use crate::destinations::watch::DestinationWatch;
use crate::destinations::{DestinationStore, Registry};
use crate::flow::Flow;
use crate::operations::Operations;
use attempt::Deliverer;
use backlog::Scanner;
use dispatcher::Dispatcher;
use sender::Sender;
use stats::StatsCounters;

/// A running worker: its tasks live in the tracker and stop with the token.
pub struct Worker {
    pub registry: Arc<Registry>,
    pub dispatcher: Arc<Dispatcher>,
    /// Delivery counters of this process (the router counts its dead letters here too).
    pub stats: Arc<StatsCounters>,
}

/// What a worker is made of: the shared handles its tasks keep.
pub struct WorkerParts {
    pub registry: Arc<Registry>,
    pub broker: Broker,
    pub cfg: Arc<Config>,
    pub store: DestinationStore,
    pub sender: Sender,
    pub flow: Arc<Flow>,
    pub tracker: TaskTracker,
    pub token: CancellationToken,
}

impl Worker {
    /// Loads the destinations, listens to the doorbell, scans the shards once (which
    /// wakes every destination with deliveries waiting), then keeps all of it going.
    pub async fn start(parts: WorkerParts) -> Result<Self, BrokerError> {
        let WorkerParts {
            registry,
            broker,
            cfg,
            store,
            sender,
            flow,
            tracker,
            token,
        } = parts;
        let d = &cfg.delivery;
        let stats = Arc::new(StatsCounters::default());
        let deliverer = Arc::new(Deliverer {
            broker: broker.clone(),
            sender,
            flow: flow.clone(),
            store: store.clone(),
            stats: stats.clone(),
            retry_after_cap: d.retry_after_cap,
            consumer_policy: store.consumer_policy(),
            operations: Operations::new(
                broker.clone(),
                store.clone(),
                &flow,
                &cfg,
                tracker.clone(),
                token.clone(),
            ),
            token: token.clone(),
        });
        let dispatcher = Dispatcher::start(
            registry.clone(),
            broker.pull_mux(token.clone()).await?,
            deliverer.clone(),
            dispatcher::Limits {
                max_in_flight_total: d.max_in_flight_total,
                pull_batch: d.pull_batch,
                request_timeout: cfg.request_timeout(),
                slow_delivery: (!d.slow_delivery.is_zero()).then_some(d.slow_delivery),
            },
            tracker.clone(),
            token.clone(),
        );

        let watch = DestinationWatch::open(&broker).await?;
        let (loaded_tx, loaded_rx) = oneshot::channel();
        let woken = Arc::downgrade(&dispatcher);
        tracker.spawn(watch.run(
            registry.clone(),
            // A resumed or re-enabled destination may have deliveries waiting.
            Box::new(move |id: &str| {
                if let Some(dispatcher) = woken.upgrade() {
                    dispatcher.signal(id);
                }
            }),
            loaded_tx,
            token.clone(),
        ));
        if loaded_rx.await.is_err() {
            return Err(BrokerError::with_kind(
                BrokerErrorKind::Unavailable,
                "loading destinations",
                "the destination watch stopped before loading",
            ));
        }
        info!(destinations = registry.len(), "destinations loaded");

        // Listen before the first scan: every delivery is then announced by one or the
        // other.
        let subject = names::doorbell_subject(&cfg.nats.inbox_prefix, &cfg.subject_prefix);
        let mut bells = doorbell::listen(&broker.client, &subject).await?;
        let ringing = dispatcher.clone();
        let bell_token = token.clone();
        tracker.spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = bell_token.cancelled() => return,
                    msg = bells.next() => match msg {
                        Some(msg) => msg,
                        None => return,
                    },
                };
                for (id, deliveries) in doorbell::parse(&msg.payload) {
                    ringing.signal_with_hint(id, deliveries);
                }
            }
        });

        let scanner = Scanner {
            broker: broker.clone(),
            registry: registry.clone(),
            dispatcher: dispatcher.clone(),
            max_consumers: cfg.events.max_consumers,
        };
        let report = scanner.scan().await?;
        info!(?report, "first shard scan done");
        let interval = d.sweep_interval;
        let scan_token = token.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = scan_token.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = scanner.scan().await {
                            warn!(error = %e, "shard scan failed");
                        }
                    }
                }
            }
        });
        let flush_every = d.stats_flush;
        let flush_token = token.clone();
        let flushed = stats.clone();
        tracker.spawn(async move { flushed.run_flusher(broker, flush_every, flush_token).await });

        Ok(Self {
            registry,
            dispatcher,
            stats,
        })
    }
}
