//! The application: `App::build(cfg)` connects to NATS (or starts the embedded server),
//! sets up streams and buckets and binds the listener; `run_until_stopped(token)` serves
//! the API and runs the workers until the token is cancelled, then shuts down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::access::{KeyStore, KeyWatch, Policy};
use crate::api::{self, AppState};
use crate::broker::embedded::{EmbeddedError, EmbeddedServer};
use crate::broker::{Broker, BrokerError, names};
use crate::config::Config;
use crate::delivery::sender::Sender;
use crate::delivery::{Worker, WorkerParts};
use crate::destinations::DestinationStore;
use crate::destinations::Registry;
use crate::destinations::ssrf::SsrfPolicy;
use crate::files::Files;
use crate::flow::Flow;
use crate::ingest::Ingestor;
use crate::router::{Router, upgrade};
use crate::telemetry;

/// How long a stopping service waits for the lookup records written behind the last
/// 202s: a round trip each, unless NATS is failing (their retries take longer).
const RECORDS_PATIENCE: Duration = Duration::from_secs(5);

/// Which parts this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// API and workers.
    Serve,
    /// The HTTP API only (ingest and management).
    Api,
    /// Workers only; the listener serves health and metrics.
    Worker,
}

impl Role {
    fn runs_api(self) -> bool {
        matches!(self, Role::Serve | Role::Api)
    }

    fn runs_worker(self) -> bool {
        matches!(self, Role::Serve | Role::Worker)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error("could not listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP client could not be built: {0}")]
    HttpClient(#[from] crate::delivery::sender::SenderError),
    #[error(transparent)]
    Folder(#[from] crate::files::folder::FolderError),
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Access(#[from] crate::access::PolicyError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

pub struct App {
    cfg: Arc<Config>,
    role: Role,
    broker: Broker,
    embedded: Option<EmbeddedServer>,
    listener: TcpListener,
    state: AppState,
    sender: Sender,
    key_watch: Option<KeyWatch>,
}

impl App {
    /// API and workers in one process (`hookstream serve`).
    pub async fn build(cfg: Config) -> Result<Self, AppError> {
        Self::build_with_role(cfg, Role::Serve).await
    }

    pub async fn build_with_role(cfg: Config, role: Role) -> Result<Self, AppError> {
        // Boxed: building sets up everything NATS holds, a future too large to keep on a
        // caller's stack (a test thread's, in debug builds).
        Box::pin(Self::build_boxed(cfg, role)).await
    }

    async fn build_boxed(cfg: Config, role: Role) -> Result<Self, AppError> {
        // Before anything else: an API open to the network by accident must not start.
        let policy = Policy::decide(&cfg.api.auth, cfg.listen_addr())?;
        // The admin keys' form is access's to judge (config knows nothing of key hashes),
        // checked here, before any connection, with the key named like any bad setting.
        crate::access::keys::parse_admin_keys(&cfg.api.auth.admin_keys.0).map_err(|why| {
            crate::config::ConfigError::Invalid {
                key: "api.auth.admin_keys",
                why: why.to_string(),
            }
        })?;
        let cfg = Arc::new(cfg);
        let (url, embedded) = match &cfg.nats.url {
            Some(url) => (url.clone(), None),
            None => {
                let server = EmbeddedServer::start(&cfg.nats.embedded).await?;
                (server.url().to_string(), Some(server))
            }
        };
        let broker = Broker::connect(&url, &cfg).await?;
        // A NATS URL may carry user and password.
        let shown = telemetry::redact::url(&url);
        info!(url = %shown, ?role, "NATS ready: streams and buckets in place");

        let ssrf = Arc::new(SsrfPolicy::from_config(&cfg.security));
        let sender = Sender::new(
            ssrf.clone(),
            &format!("hookstream/{}", env!("CARGO_PKG_VERSION")),
            cfg.delivery.max_in_flight_total,
        )?;
        // In `serve`, the API shares the worker's view of the destinations.
        let registry = role.runs_worker().then(|| Arc::new(Registry::default()));
        let destinations =
            DestinationStore::new(broker.clone(), cfg.clone(), ssrf, registry.clone());
        let flow = Arc::new(Flow::new(&broker, &cfg.flow));
        let (keys, key_watch) = KeyStore::open(&broker, &cfg, policy).await?;
        if policy.is_open() {
            warn!(
                listen = %cfg.api.listen,
                "the API is open: no admin API key is configured (HOOKSTREAM_ADMIN_API_KEYS), \
                 so requests without a key act as admin"
            );
        }
        let ingestor = Ingestor::new(broker.clone(), destinations.clone(), flow.clone());
        // Before anything listens: a watched folder that cannot be used stops the start.
        if let (Some(folder), true) = (&cfg.ingest.folder, role.runs_worker()) {
            crate::files::folder::check(folder)?;
        }
        let files = Files::connect(broker.clone(), cfg.clone(), ingestor.clone()).await?;
        let state = AppState::new(api::Shared {
            broker: broker.clone(),
            cfg: cfg.clone(),
            ingestor,
            files,
            flow,
            destinations,
            registry,
            worker_ready: Arc::new(AtomicBool::new(!role.runs_worker())),
            metrics: telemetry::metrics::install(cfg.telemetry.destination_label_limit()),
            console: Default::default(),
            keys,
        });
        let addr = cfg.listen_addr();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        Ok(Self {
            cfg,
            role,
            broker,
            embedded,
            listener,
            state,
            sender,
            key_watch: Some(key_watch),
        })
    }

    /// The address the listener is bound to (port 0 in config becomes a real port).
    pub fn api_address(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub async fn run_until_stopped(mut self, stop: CancellationToken) -> Result<(), AppError> {
        let tracker = TaskTracker::new();
        // Workers stop on their own token, after the HTTP server has stopped accepting.
        let workers_token = CancellationToken::new();

        // Every role keeps a copy of the circuits: workers gate on it, the API shows it.
        tracker.spawn(
            self.state
                .flow
                .circuits
                .clone()
                .run_watch(workers_token.clone()),
        );
        if let Some(watch) = self.key_watch.take() {
            tracker.spawn(watch.run(workers_token.clone()));
        }
        // Every role lists files: the API answers from this index.
        tracker.spawn(self.state.files.clone().run_index(workers_token.clone()));
        if self.role.runs_worker() {
            self.start_worker(&tracker, &workers_token, &stop);
            self.start_files(&tracker, &workers_token);
        }

        let router = if self.role.runs_api() {
            api::router(self.state.clone(), crate::console::router())
        } else {
            api::worker_router(self.state.clone())
        };
        let addr = self.api_address();
        info!(?addr, role = ?self.role, "listening");
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .await;

        // Stop taking new work, let in-flight deliveries finish within the grace period.
        workers_token.cancel();
        tracker.close();
        let grace = self.cfg.delivery.shutdown_grace;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!("grace period over; unacknowledged messages will be redelivered");
        }
        // The last 202s' lookup records may still be on their way (docs/adr/0020).
        if !self.state.ingestor.records_settled(RECORDS_PATIENCE).await {
            warn!("some lookup records of accepted events were not stored before stopping");
        }
        // Acks are fire-and-forget publishes: flush them before the connection goes.
        match tokio::time::timeout(Duration::from_secs(2), self.broker.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "final flush to NATS failed"),
            Err(_) => warn!("final flush to NATS timed out"),
        }
        if let Some(server) = self.embedded.take() {
            server.stop().await;
        }
        info!("stopped");
        served.map_err(AppError::Serve)
    }

    /// File ingest: the uploads scan and, when configured, the watched folder.
    fn start_files(&self, tracker: &TaskTracker, token: &CancellationToken) {
        let files = self.state.files.clone();
        tracker.spawn(files.clone().run_uploads(tracker.clone(), token.clone()));
        if let Some(folder) = self.cfg.ingest.folder.clone() {
            tracker.spawn(files.run_folder(folder, tracker.clone(), token.clone()));
        }
    }

    /// Starts the worker in the background: the API answers (and /readyz says "loading")
    /// while it loads destinations.
    fn start_worker(
        &mut self,
        tracker: &TaskTracker,
        token: &CancellationToken,
        stop: &CancellationToken,
    ) {
        let broker = self.broker.clone();
        let cfg = self.cfg.clone();
        let store = self.state.destinations.clone();
        let sender = self.sender.clone();
        let flow = self.state.flow.clone();
        let ready = self.state.worker_ready.clone();
        let registry = self
            .state
            .registry
            .clone()
            .expect("a worker role has a registry");
        let tracker_inner = tracker.clone();
        let token = token.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let mut delay = Duration::from_millis(500);
            loop {
                let started = Worker::start(WorkerParts {
                    registry: registry.clone(),
                    broker: broker.clone(),
                    cfg: cfg.clone(),
                    store: store.clone(),
                    sender: sender.clone(),
                    flow: flow.clone(),
                    tracker: tracker_inner.clone(),
                    token: token.clone(),
                })
                .await;
                match started {
                    Ok(worker) => {
                        // Routing (docs/adr/0010): every worker runs a router, one of them
                        // pinned; and the consumers of the layout before routing are
                        // drained once into the shards.
                        tracker_inner.spawn(
                            Router {
                                broker: broker.clone(),
                                registry: registry.clone(),
                                stats: worker.stats.clone(),
                                doorbell: names::doorbell_subject(
                                    &cfg.nats.inbox_prefix,
                                    &cfg.subject_prefix,
                                ),
                                token: token.clone(),
                            }
                            .run(),
                        );
                        tracker_inner.spawn(upgrade::run(
                            broker.clone(),
                            registry.clone(),
                            token.clone(),
                        ));
                        ready.store(true, Ordering::Release);
                        info!(destinations = worker.registry.len(), "worker ready");
                        return;
                    }
                    Err(e) => {
                        error!(error = %e, "worker could not start; retrying");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
    }
}
