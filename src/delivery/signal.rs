//! The cheap signal of which destinations have new events: one ordered, headers-only
//! consumer per worker on `HS_EVENTS`. Each message's subject is mapped through the subject
//! index to the destinations that want it, and those are woken. It costs one small
//! message per event per worker, and nothing per destination.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, push};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::dispatcher::Dispatcher;
use super::registry::Registry;
use crate::broker::names::EventSubject;
use crate::broker::{Broker, BrokerError};

pub struct Signal {
    messages: push::Ordered,
}

impl Signal {
    /// Creates the consumer; from this point on every new event is seen.
    pub async fn subscribe(broker: &Broker) -> Result<Self, BrokerError> {
        let consumer = broker
            .events
            .create_consumer(push::OrderedConfig {
                deliver_subject: broker.client.new_inbox(),
                description: Some("hookstream worker: new-event signal".into()),
                headers_only: true,
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| BrokerError::new("creating the signal consumer", e))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| BrokerError::new("subscribing to the signal consumer", e))?;
        Ok(Self { messages })
    }

    pub async fn run(
        mut self,
        broker: Broker,
        registry: Arc<Registry>,
        dispatcher: Arc<Dispatcher>,
        token: CancellationToken,
    ) {
        loop {
            let next = tokio::select! {
                _ = token.cancelled() => return,
                next = self.messages.next() => next,
            };
            match next {
                Some(Ok(msg)) => match broker.subjects.parse_event_subject(msg.subject.as_str()) {
                    Some(EventSubject::Tenant { tenant, event_type }) => {
                        for id in registry.matching(tenant, event_type) {
                            dispatcher.signal(&id);
                        }
                    }
                    Some(EventSubject::Directed { destination, .. }) => {
                        dispatcher.signal(destination);
                    }
                    None => {}
                },
                Some(Err(e)) => {
                    // The ordered consumer recreates itself; events in a gap are found by
                    // the sweep.
                    warn!(error = %e, "signal consumer error");
                }
                None => {
                    warn!("signal consumer ended; recreating");
                    loop {
                        tokio::select! {
                            _ = token.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        match Signal::subscribe(&broker).await {
                            Ok(fresh) => {
                                self = fresh;
                                break;
                            }
                            Err(e) => warn!(error = %e, "signal consumer not recreated yet"),
                        }
                    }
                }
            }
        }
    }
}
