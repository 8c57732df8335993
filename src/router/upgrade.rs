//! Upgrade from the layout before routing (ADR 0001: a consumer `dest_<id>` per
//! destination on `HS_EVENTS` with the destination's filters). The router consumer starts
//! after the last event stored when it was created (`broker/setup.rs`); what the old
//! consumers still hold (pending, or unacknowledged on a worker that stopped) is routed
//! here, to that destination only, with the router's own message ids (so that the router
//! and this drain writing the same delivery store it once), then each old consumer is
//! removed once it holds nothing. Every worker runs it at start; it ends when no old
//! consumer is left.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::names::{self, EventSubject};
use crate::broker::{Broker, BrokerError, BrokerErrorKind, consumers};
use crate::destinations::Registry;

pub async fn run(broker: Broker, registry: Arc<Registry>, token: CancellationToken) {
    loop {
        match drain_all(&broker, &registry, &token).await {
            Ok(0) => return,
            Ok(left) => info!(left, "old destination consumers still hold events"),
            Err(e) => warn!(error = %e, "upgrade of old destination consumers failed; retrying"),
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One pass over the old consumers; answers how many are left.
async fn drain_all(
    broker: &Broker,
    registry: &Registry,
    token: &CancellationToken,
) -> Result<usize, BrokerError> {
    let old = consumers::list_old(&broker.events).await?;
    let mut left = 0;
    for consumer in old {
        if token.is_cancelled() {
            return Ok(left + 1);
        }
        let routed = drain_one(broker, registry, &consumer.name).await?;
        if routed > 0 {
            info!(consumer = %consumer.name, routed, "old consumer's events routed");
        }
        let fresh = consumers::list_old(&broker.events)
            .await?
            .into_iter()
            .find(|c| c.name == consumer.name);
        match fresh {
            Some(c) if c.num_pending > 0 || c.num_ack_pending > 0 => left += 1,
            Some(_) => {
                consumers::delete(&broker.events, &consumer.name).await?;
                info!(consumer = %consumer.name, "old destination consumer removed");
            }
            None => {}
        }
    }
    Ok(left)
}

/// Routes what the old consumer hands out now; answers how many deliveries it wrote.
async fn drain_one(broker: &Broker, registry: &Registry, name: &str) -> Result<usize, BrokerError> {
    let Some(id) = names::destination_of_consumer(name) else {
        return Ok(0);
    };
    let consumer: PullConsumer = broker
        .events
        .get_consumer(name)
        .await
        .map_err(|e| BrokerError::new("looking up an old consumer", e))?;
    let destination = registry.get(id);
    // A paused destination's old consumer is paused: its events go to the shard, where
    // the destination's new consumer keeps them waiting.
    consumers::set_paused(&broker.events, name, false).await?;
    let mut routed = 0;
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(256)
            .messages()
            .await
            .map_err(|e| BrokerError::new("pulling from an old consumer", e))?;
        let mut got = 0;
        while let Some(msg) = batch.next().await {
            let msg = msg.map_err(|e| BrokerError::new("pulling from an old consumer", e))?;
            got += 1;
            let seq = msg
                .info()
                .map_err(|e| BrokerError::new("reading an old consumer's message", e))?
                .stream_sequence;
            // A deleted destination's events are discarded, as the router would, and so
            // are those a widened filter caught that the destination never wanted.
            let wanted = destination.as_ref().is_some_and(|d| {
                match broker.subjects.parse_event_subject(msg.subject.as_str()) {
                    Some(EventSubject::Tenant { event_type, .. }) => d.accepts(event_type),
                    Some(EventSubject::Directed { .. }) => true,
                    None => false,
                }
            });
            if wanted {
                let shard = broker.shard_of(id);
                let headers = super::delivery_headers(&msg, seq, id);
                broker
                    .js
                    .publish_with_headers(
                        broker.subjects.delivery(shard, id),
                        headers,
                        msg.payload.clone(),
                    )
                    .await
                    .map_err(|e| BrokerError::new("routing an old consumer's event", e))?
                    .await
                    .map_err(|e| BrokerError::new("routing an old consumer's event", e))?;
                routed += 1;
            }
            msg.ack().await.map_err(|e| {
                BrokerError::with_kind(BrokerErrorKind::Unavailable, "acking an old event", e)
            })?;
        }
        if got == 0 {
            return Ok(routed);
        }
    }
}
