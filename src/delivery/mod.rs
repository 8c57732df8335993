//! Delivery: workers that pull from destination consumers and send signed webhooks.
//!
//! - `watch` keeps `registry` equal to the destinations bucket,
//! - `signal` wakes destinations that have new events, `sweep` catches the rest,
//! - `dispatcher` drains woken destinations, `attempt` handles one message,
//! - `sender`, `signer`, `retry`, `template`, `ssrf` are the HTTP side,
//! - `stats` sums delivery counters across replicas.
//!
//! Nothing here knows axum.

pub mod attempt;
pub mod dispatcher;
pub mod index;
pub mod parked;
pub mod registry;
pub mod retry;
pub mod sender;
pub mod signal;
pub mod signer;
pub mod ssrf;
pub mod stats;
pub mod sweep;
pub mod template;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::{Broker, BrokerError, BrokerErrorKind};
use crate::config::{Config, PullMode};
use crate::destinations::DestinationStore;
use crate::flow::Flow;
use attempt::Deliverer;
use dispatcher::Dispatcher;
use registry::Registry;
use sender::Sender;
use stats::StatsCounters;
use sweep::Sweeper;

/// A running worker: its tasks live in the tracker and stop with the token.
pub struct Worker {
    pub registry: Arc<Registry>,
    pub dispatcher: Arc<Dispatcher>,
    ready: Arc<AtomicBool>,
}

impl Worker {
    /// Loads the destinations, subscribes to the signal, runs a first sweep (which repairs
    /// consumers and wakes every destination with a backlog), then keeps all of it going.
    // Each argument is a distinct shared handle the worker's tasks keep; a struct holding
    // them would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        registry: Arc<Registry>,
        broker: Broker,
        cfg: Arc<Config>,
        store: DestinationStore,
        sender: Sender,
        flow: Arc<Flow>,
        tracker: TaskTracker,
        token: CancellationToken,
    ) -> Result<Self, BrokerError> {
        let d = &cfg.delivery;
        let stats = Arc::new(StatsCounters::default());
        let ack_wait_margin = Duration::from_millis(d.ack_wait_margin_ms);
        let deliverer = Arc::new(Deliverer {
            broker: broker.clone(),
            sender,
            flow,
            store: store.clone(),
            stats: stats.clone(),
            retry_after_cap: Duration::from_millis(d.retry_after_cap_ms),
            ack_wait_margin,
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
                slow_delivery: (d.slow_delivery_ms > 0)
                    .then(|| Duration::from_millis(d.slow_delivery_ms)),
            },
            tracker.clone(),
            token.clone(),
        );

        let watch = watch::DestinationWatch::open(&broker).await?;
        let (loaded_tx, loaded_rx) = oneshot::channel();
        tracker.spawn(watch.run(
            broker.clone(),
            registry.clone(),
            dispatcher.clone(),
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

        let on_demand = d.pull_mode == PullMode::OnDemand;
        if on_demand {
            // Subscribe before the first sweep: every event is then seen by one or the other.
            let signal = signal::Signal::subscribe(&broker).await?;
            tracker.spawn(signal.run(
                broker.clone(),
                registry.clone(),
                dispatcher.clone(),
                token.clone(),
            ));
        } else {
            tracker.spawn(parked::run(
                broker.clone(),
                registry.clone(),
                deliverer.clone(),
                token.clone(),
            ));
        }

        let sweeper = Sweeper {
            broker: broker.clone(),
            registry: registry.clone(),
            dispatcher: dispatcher.clone(),
            store,
            ack_wait_margin,
            max_consumers: cfg.events.max_consumers,
            wake: on_demand,
        };
        let report = sweeper.sweep().await?;
        info!(?report, "first sweep done");

        let ready = Arc::new(AtomicBool::new(true));
        let interval = Duration::from_millis(d.sweep_interval_ms);
        let sweep_token = token.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = sweep_token.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = sweeper.sweep().await {
                            warn!(error = %e, "sweep failed");
                        }
                    }
                }
            }
        });
        let flush_every = Duration::from_millis(d.stats_flush_ms);
        let flush_token = token.clone();
        tracker.spawn(async move { stats.run_flusher(broker, flush_every, flush_token).await });

        Ok(Self {
            registry,
            dispatcher,
            ready,
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
