//! The baseline that ADR 0001 measured and replaced: one parked pull stream per
//! destination (async-nats `Consumer::stream()`), each with its own task, whether the
//! destination has work or not. Kept as `delivery.pull_mode = "per_destination"` so that
//! `make bench` can measure both designs side by side in one run; not for production.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::attempt::Deliverer;
use super::registry::Registry;
use crate::broker::{Broker, names};

/// Keeps one pull-stream task per active destination until cancelled.
pub async fn run(
    broker: Broker,
    registry: Arc<Registry>,
    deliverer: Arc<Deliverer>,
    token: CancellationToken,
) {
    let mut tasks: HashMap<String, AbortHandle> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tick.tick() => {}
        }
        let active: HashMap<String, _> = registry
            .all()
            .into_iter()
            .filter(|d| d.is_active())
            .map(|d| (d.id.to_string(), d))
            .collect();
        tasks.retain(|id, handle| {
            let keep = active.contains_key(id) && !handle.is_finished();
            if !keep {
                handle.abort();
            }
            keep
        });
        for (id, destination) in active {
            if tasks.contains_key(&id) {
                continue;
            }
            let broker = broker.clone();
            let deliverer = deliverer.clone();
            let token = token.clone();
            let handle = tokio::spawn(async move {
                let name = names::consumer_name(&destination.id);
                let consumer: PullConsumer = match broker.events.get_consumer(&name).await {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(consumer = %name, error = %e, "no consumer");
                        return;
                    }
                };
                let limit = if destination.ordered {
                    1
                } else {
                    destination.max_in_flight as usize
                };
                let Ok(messages) = consumer
                    .stream()
                    .max_messages_per_batch(limit.min(100))
                    .messages()
                    .await
                else {
                    return;
                };
                messages
                    .take_until(token.cancelled_owned())
                    .filter_map(|m| async move { m.ok() })
                    .for_each_concurrent(limit, |msg| {
                        let deliverer = deliverer.clone();
                        let destination = destination.clone();
                        async move {
                            deliverer.handle(&destination, msg).await;
                        }
                    })
                    .await;
            });
            tasks.insert(id, handle.abort_handle());
        }
    }
    for (_, handle) in tasks {
        handle.abort();
    }
}
