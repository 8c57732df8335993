//! Keeps the registry equal to the `hs_destinations` bucket: the history first (every
//! current destination), then each change as it happens.

use std::sync::Arc;

use async_nats::jetstream::kv::{Entry, Operation, Watch};
use futures::StreamExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::dispatcher::Dispatcher;
use super::registry::Registry;
use crate::broker::{Broker, BrokerError, consumers, names};
use crate::destinations::decode;
use crate::model::DestinationId;

pub struct DestinationWatch {
    watch: Watch,
    initially_empty: bool,
}

impl DestinationWatch {
    pub async fn open(broker: &Broker) -> Result<Self, BrokerError> {
        let mut status = broker
            .destinations
            .status()
            .await
            .map_err(|e| BrokerError::new("reading destinations bucket", e))?;
        let initially_empty = status.values() == 0;
        let _ = &mut status;
        let watch = broker
            .destinations
            .watch_with_history(">")
            .await
            .map_err(|e| BrokerError::new("watching destinations", e))?;
        Ok(Self {
            watch,
            initially_empty,
        })
    }

    /// Applies entries until cancelled; `loaded` fires once the history is in.
    pub async fn run(
        mut self,
        broker: Broker,
        registry: Arc<Registry>,
        dispatcher: Arc<Dispatcher>,
        loaded: oneshot::Sender<()>,
        token: CancellationToken,
    ) {
        let mut loaded = Some(loaded);
        if self.initially_empty {
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
                    apply(&broker, &registry, &dispatcher, entry, loaded.is_none()).await;
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

async fn apply(
    broker: &Broker,
    registry: &Registry,
    dispatcher: &Arc<Dispatcher>,
    entry: Entry,
    live: bool,
) {
    match entry.operation {
        Operation::Put => match decode(&entry.value) {
            Ok(destination) => {
                let id = destination.id.to_string();
                let active = destination.is_active();
                registry.upsert(destination, entry.revision);
                // A resumed or re-enabled destination may have a backlog waiting.
                if live && active {
                    dispatcher.signal(&id);
                }
            }
            Err(e) => warn!(key = %entry.key, error = %e, "undecodable destination ignored"),
        },
        Operation::Delete | Operation::Purge => {
            registry.remove(&entry.key, entry.revision);
            if live && let Ok(id) = DestinationId::parse(entry.key.clone()) {
                // The API removes it too; this finishes the job if the API died between.
                let _ = consumers::delete(&broker.events, &names::consumer_name(&id)).await;
            }
        }
    }
}
