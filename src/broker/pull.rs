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

/// How long a pull waits for its first message (a 404 answers an empty consumer at once;
/// silence means its ack-pending slots are full).
const FIRST_MESSAGE_WAIT: Duration = Duration::from_millis(250);
/// After a message, how long a quiet gap ends the pull (a partly served pull sends no end).
const NEXT_MESSAGE_GAP: Duration = Duration::from_millis(25);

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

    fn client_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Up to `batch` messages that are ready now; an empty answer when there are none.
    ///
    /// A plain no-wait pull: nats-server answers it at once with the messages it can find.
    /// (Measured: with an `expires`, the server serves the request as a waiting one and,
    /// across 1,000 filtered consumers, hands out 1–2 messages per pull instead of the
    /// batch.) Two answers do not end, though: a pull asking for more than the consumer's
    /// free ack-pending slots gets the ones that fit and no end status, and one at full
    /// slots gets nothing; the server keeps such a request and serves it as slots free up.
    /// So this returns what came promptly, and `late` receives whatever the server sends
    /// for the same request afterwards, until the request is complete, ended, or
    /// `request_timeout` has passed: no message is sent to an inbox nobody reads.
    pub async fn fetch(
        &self,
        consumer: &str,
        batch: usize,
        late: impl Fn(Message) + Send + 'static,
    ) -> Result<Vec<Message>, BrokerError> {
        let inbox = self.client.new_inbox();
        let mut sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| BrokerError::new("subscribing for a pull", e))?;
        let request = serde_json::json!({ "batch": batch, "no_wait": true });
        self.client
            .publish_with_reply(
                format!("$JS.API.CONSUMER.MSG.NEXT.{}.{consumer}", self.stream),
                inbox,
                request.to_string().into(),
            )
            .await
            .map_err(|e| BrokerError::new("sending a pull request", e))?;

        let mut out = Vec::with_capacity(batch.min(64));
        let hard_deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if out.len() >= batch {
                return Ok(out);
            }
            let wait = if out.is_empty() {
                FIRST_MESSAGE_WAIT
            } else {
                NEXT_MESSAGE_GAP
            };
            let deadline = (tokio::time::Instant::now() + wait).min(hard_deadline);
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(msg)) => match self.classify(msg)? {
                    Answer::Message(m) => out.push(m),
                    Answer::Heartbeat => {}
                    Answer::End => return Ok(out),
                },
                Ok(None) => return Ok(out),
                Err(_) if !self.client_connected() => {
                    return Err(BrokerError::with_kind(
                        BrokerErrorKind::Unavailable,
                        "pulling messages",
                        "not connected to NATS",
                    ));
                }
                Err(_) => break,
            }
        }
        // The request is still open on the server: keep its inbox read by a tail task.
        let remaining = batch - out.len();
        let this = self.clone_handle();
        tokio::spawn(async move {
            let mut received = 0;
            while received < remaining {
                match tokio::time::timeout_at(hard_deadline, sub.next()).await {
                    Ok(Some(msg)) => match this.classify(msg) {
                        Ok(Answer::Message(m)) => {
                            received += 1;
                            late(m);
                        }
                        Ok(Answer::Heartbeat) => {}
                        Ok(Answer::End) | Err(_) => return,
                    },
                    Ok(None) | Err(_) => return,
                }
            }
        });
        Ok(out)
    }

    fn clone_handle(&self) -> Self {
        Self {
            client: self.client.clone(),
            context: self.context.clone(),
            stream: self.stream.clone(),
            timeout: self.timeout,
        }
    }

    fn classify(&self, msg: async_nats::Message) -> Result<Answer, BrokerError> {
        match msg.status {
            None | Some(StatusCode::OK) => Ok(Answer::Message(Message {
                message: msg,
                context: self.context.clone(),
            })),
            Some(StatusCode::NO_RESPONDERS) => Err(BrokerError::with_kind(
                BrokerErrorKind::Unavailable,
                "pulling messages",
                "JetStream did not answer (no responders)",
            )),
            Some(StatusCode::IDLE_HEARTBEAT) => Ok(Answer::Heartbeat),
            // 404 no messages, 408 request expired, 409 consumer deleted or limits: over.
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
                Ok(Answer::End)
            }
        }
    }
}

// Lives only between reading an answer and acting on it; boxing the message would cost
// an allocation per delivered message for nothing.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Message(Message),
    Heartbeat,
    End,
}
