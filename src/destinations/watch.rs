//! Keeps the registry equal to the `hs_destinations` bucket: the history first (every
//! current destination), then each change as it happens. The registry records the last
//! bucket revision the watch applied, so the router can tell whether it has seen every
//! destination write made before an event (docs/adr/0010).

use std::sync::Arc;

use async_nats::jetstream::kv::{Entry, Operation};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::decode;
use super::registry::Registry;
use crate::broker::watch::{BucketWatch, Change, Opened};
use crate::broker::{Broker, BrokerError};

/// Told of each destination that became active (created, resumed, re-enabled) while the
/// watch runs: it may have deliveries waiting.
pub type OnActive = Box<dyn Fn(&str) + Send + Sync>;

pub struct DestinationWatch {
    watch: BucketWatch,
    opened: Opened,
}

impl DestinationWatch {
    pub async fn open(broker: &Broker) -> Result<Self, BrokerError> {
        let (watch, opened) =
            BucketWatch::open(broker.destinations.clone(), "destinations").await?;
        Ok(Self { watch, opened })
    }

    /// Applies entries until cancelled; `loaded` fires once the history is in. A watch
    /// that reopens replays the history, which the registry applies again by revision.
    pub async fn run(
        mut self,
        registry: Arc<Registry>,
        on_active: OnActive,
        loaded: oneshot::Sender<()>,
        token: CancellationToken,
    ) {
        let mut loaded = Some(loaded);
        if self.opened.empty {
            registry.watched_up_to(self.opened.last_seq);
            let _ = loaded.take().map(|tx| tx.send(()));
        }
        while let Some(change) = self.watch.next(&token).await {
            if let Change::Entry(entry) = change {
                let caught_up = entry.delta == 0;
                apply(&registry, &on_active, entry, loaded.is_none());
                if caught_up {
                    let _ = loaded.take().map(|tx| tx.send(()));
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
