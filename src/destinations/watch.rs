//! Keeps the registry equal to the `hs_destinations` bucket: the history first (every
//! current destination), then each change as it happens. The registry records the last
//! bucket revision the watch applied, so the router can tell whether it has seen every
//! destination write made before an event (docs/adr/0010).

use std::sync::Arc;

use async_nats::jetstream::kv::{Entry, Operation, Watch};
use futures::StreamExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::decode;
use super::registry::Registry;
use crate::broker::{Broker, BrokerError};

/// Told of each destination that became active (created, resumed, re-enabled) while the
/// watch runs: it may have deliveries waiting.
pub type OnActive = Box<dyn Fn(&str) + Send + Sync>;

pub struct DestinationWatch {
    watch: Watch,
    initially_empty: bool,
    /// The bucket stream's last sequence when the watch opened (an empty bucket may have
    /// had entries that were deleted and expired: nothing to wait for below it).
    last_seq: u64,
}

impl DestinationWatch {
    pub async fn open(broker: &Broker) -> Result<Self, BrokerError> {
        let status = broker
            .destinations
            .status()
            .await
            .map_err(|e| BrokerError::new("reading destinations bucket", e))?;
        let initially_empty = status.values() == 0;
        let last_seq = status.info.state.last_sequence;
        let watch = broker
            .destinations
            .watch_with_history(">")
            .await
            .map_err(|e| BrokerError::new("watching destinations", e))?;
        Ok(Self {
            watch,
            initially_empty,
            last_seq,
        })
    }

    /// Applies entries until cancelled; `loaded` fires once the history is in.
    pub async fn run(
        mut self,
        broker: Broker,
        registry: Arc<Registry>,
        on_active: OnActive,
        loaded: oneshot::Sender<()>,
        token: CancellationToken,
    ) {
        let mut loaded = Some(loaded);
        if self.initially_empty {
            registry.watched_up_to(self.last_seq);
            let _ = loaded.take().map(|tx| tx.send(()));
        }
        loop {
            let next = tokio::select! {
                _ = token.cancelled() => return,
                next = self.watch.next() => next,
            };
            match next {
                Some(Ok(entry)) => {
                    let caught_up = entry.delta == 0;
                    apply(&registry, &on_active, entry, loaded.is_none());
                    if caught_up {
                        let _ = loaded.take().map(|tx| tx.send(()));
                    }
                }
                Some(Err(e)) => warn!(error = %e, "destination watch error"),
                None => {
                    warn!("destination watch ended; reopening");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    match DestinationWatch::open(&broker).await {
                        Ok(fresh) => self.watch = fresh.watch,
                        Err(e) => warn!(error = %e, "destination watch not reopened yet"),
                    }
                }
            }
        }
    }
}

fn apply(registry: &Registry, on_active: &OnActive, entry: Entry, live: bool) {
    let revision = entry.revision;
    match entry.operation {
        Operation::Put => match decode(&entry.value) {
            Ok(destination) => {
                let id = destination.id.to_string();
                let active = destination.is_active();
                registry.upsert(destination, entry.revision);
                // A resumed or re-enabled destination may have deliveries waiting.
                if live && active {
                    on_active(&id);
                }
            }
            Err(e) => warn!(key = %entry.key, error = %e, "undecodable destination ignored"),
        },
        Operation::Delete | Operation::Purge => {
            registry.remove(&entry.key, entry.revision);
        }
    }
    registry.watched_up_to(revision);
}
