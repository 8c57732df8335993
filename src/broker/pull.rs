//! One no-wait pull from a consumer, without a consumer handle.
//!
//! async-nats's `Consumer` handle needs a consumer-info request to build and keeps a copy
//! of the info; with thousands of destinations pulled on demand that is a round trip and
//! a kilobyte each for nothing. A pull is just a request to
//! `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` answered by messages and a status.

use std::time::Duration;

use async_nats::jetstream::{self, Message};
use async_nats::{Client, StatusCode};
use futures::StreamExt;

use super::error::{BrokerError, BrokerErrorKind};

/// How long a pull may wait for messages beyond those ready at once.
const PULL_EXPIRES: Duration = Duration::from_millis(20);

pub struct Puller {
    client: Client,
    context: jetstream::Context,
    stream: String,
    timeout: Duration,
}

impl Puller {
    pub fn new(context: jetstream::Context, stream: &str, timeout: Duration) -> Self {
        Self {
            client: context.client(),
            context,
            stream: stream.to_string(),
            timeout,
        }
    }

    /// Up to `batch` messages that are ready now; an empty answer when there are none.
    pub async fn fetch(&self, consumer: &str, batch: usize) -> Result<Vec<Message>, BrokerError> {
        let inbox = self.client.new_inbox();
        let mut sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| BrokerError::new("subscribing for a pull", e))?;
        // `expires` matters: a no-wait pull that asks for more messages than the consumer
        // has free ack-pending slots gets the ones that fit and then no end status (nor
        // any at all when the slots are full). With a short expiry the server closes the
        // request with a 408 instead of leaving it open until our own timeout.
        let request = serde_json::json!({
            "batch": batch,
            "no_wait": true,
            "expires": PULL_EXPIRES.as_nanos() as u64,
        });
        self.client
            .publish_with_reply(
                format!("$JS.API.CONSUMER.MSG.NEXT.{}.{consumer}", self.stream),
                inbox,
                request.to_string().into(),
            )
            .await
            .map_err(|e| BrokerError::new("sending a pull request", e))?;

        let mut out = Vec::with_capacity(batch.min(64));
        let deadline = tokio::time::Instant::now() + self.timeout;
        while out.len() < batch {
            let next = tokio::time::timeout_at(deadline, sub.next()).await;
            let msg = match next {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(_) if out.is_empty() => {
                    return Err(BrokerError::with_kind(
                        BrokerErrorKind::Unavailable,
                        "pulling messages",
                        "no answer to a pull request",
                    ));
                }
                Err(_) => break,
            };
            match msg.status {
                None | Some(StatusCode::OK) => out.push(Message {
                    message: msg,
                    context: self.context.clone(),
                }),
                Some(StatusCode::NO_RESPONDERS) => {
                    return Err(BrokerError::with_kind(
                        BrokerErrorKind::Unavailable,
                        "pulling messages",
                        "JetStream did not answer (no responders)",
                    ));
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                // 404 no messages, 408 request expired, 409 max ack pending reached or
                // consumer deleted: this pull is over.
                Some(status) => {
                    if status == StatusCode::REQUEST_TERMINATED
                        && msg
                            .description
                            .as_deref()
                            .is_some_and(|d| d.contains("Consumer Deleted"))
                    {
                        return Err(BrokerError::with_kind(
                            BrokerErrorKind::NotFound,
                            "pulling messages",
                            "consumer deleted",
                        ));
                    }
                    break;
                }
            }
        }
        // Dropping the subscriber unsubscribes the inbox.
        Ok(out)
    }
}
