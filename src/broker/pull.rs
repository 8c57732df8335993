//! No-wait pulls from destination consumers (`dest_<id>` on its delivery shard), all
//! answered on one subscription.
//!
//! A pull is a request to `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`; nats-server
//! answers it with messages and, unless it sent the whole batch, a status. Each worker
//! subscribes once to `<inbox>.>` and sends every pull with the reply subject
//! `<inbox>.<consumer>.<request>`, so that:
//! - a pull costs no subscribe and unsubscribe on the server;
//! - an answer is never sent to an inbox nobody reads. A pull asking for more than the
//!   consumer's free ack-pending slots is kept by the server and served as slots free up,
//!   maybe seconds later; its messages still reach this subscription, go to the drain of
//!   their consumer if it is still running, and otherwise to the orphan channel, whose
//!   reader delivers them like any other. (The earlier design, one inbox per pull, had to
//!   give up on such answers and stranded their messages until the ack wait.)
//!
//! Messages keep their stream subject; the consumer they belong to is read from their ack
//! subject. Status answers come on the reply subject itself.
//!
//! async-nats's `Consumer` handle is not used: it needs a consumer-info round trip to build
//! and keeps a copy of the info, a kilobyte per destination for nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, Message};
use async_nats::{Client, StatusCode, Subscriber};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace};

use super::error::{BrokerError, BrokerErrorKind};

/// What the server sent for a consumer's pulls.
pub enum Reply {
    Message(Box<Message>),
    /// Request `request` is over without (all of) its messages: 404 nothing ready, 408
    /// other requests pending, 409 limits.
    End {
        request: u64,
        status: StatusCode,
    },
    /// The consumer was deleted.
    Gone,
}

/// A message whose consumer has no drain open here any more: (consumer, message).
pub type Orphan = (String, Box<Message>);

#[derive(Clone)]
pub struct PullMux {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// `<inbox prefix>.<unique>`: the subscription is on `<base>.>`.
    base: String,
    next_request: AtomicU64,
    routes: Mutex<HashMap<String, mpsc::UnboundedSender<Reply>>>,
    orphans: mpsc::UnboundedSender<Orphan>,
}

impl PullMux {
    /// Subscribes and starts routing answers until `token` is cancelled. Messages for
    /// consumers with no open [`Route`] come out of the returned receiver.
    pub async fn start(
        context: jetstream::Context,
        token: CancellationToken,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Orphan>), BrokerError> {
        let client = context.client();
        let base = client.new_inbox();
        let subscription = client
            .subscribe(format!("{base}.>"))
            .await
            .map_err(|e| BrokerError::new("subscribing for pull answers", e))?;
        let (orphans, orphan_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            client,
            base,
            next_request: AtomicU64::new(1),
            routes: Mutex::new(HashMap::new()),
            orphans,
        });
        tokio::spawn(route_answers(inner.clone(), context, subscription, token));
        Ok((Self { inner }, orphan_rx))
    }

    /// Opens the answer channel of `consumer` on `stream` (one per consumer at a time:
    /// the drain).
    pub fn open(&self, stream: &str, consumer: &str) -> Route {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.lock_routes().insert(consumer.to_string(), tx);
        Route {
            inner: self.inner.clone(),
            stream: stream.to_string(),
            consumer: consumer.to_string(),
            rx,
        }
    }
}

impl Inner {
    fn lock_routes(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Reply>>> {
        self.routes
            .lock()
            .expect("pull routes lock is never poisoned")
    }

    fn orphan(&self, consumer: String, message: Box<Message>) {
        // The receiver lives as long as the worker; after that, redelivery takes over.
        let _ = self.orphans.send((consumer, message));
    }
}

/// The answers of one consumer's pulls, while its drain runs.
pub struct Route {
    inner: Arc<Inner>,
    stream: String,
    consumer: String,
    rx: mpsc::UnboundedReceiver<Reply>,
}

impl Route {
    /// Asks for up to `batch` messages ready now; answers the request's number. What comes
    /// back arrives through [`Route::recv`].
    pub async fn request(&self, batch: usize) -> Result<u64, BrokerError> {
        if self.inner.client.connection_state() != async_nats::connection::State::Connected {
            return Err(BrokerError::with_kind(
                BrokerErrorKind::Unavailable,
                "pulling messages",
                "not connected to NATS",
            ));
        }
        let request = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let body = format!(r#"{{"batch":{batch},"no_wait":true}}"#);
        self.inner
            .client
            .publish_with_reply(
                format!(
                    "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
                    self.stream, self.consumer
                ),
                format!("{}.{}.{request}", self.inner.base, self.consumer),
                body.into(),
            )
            .await
            .map_err(|e| BrokerError::new("sending a pull request", e))?;
        Ok(request)
    }

    pub async fn recv(&mut self) -> Option<Reply> {
        self.rx.recv().await
    }
}

impl Drop for Route {
    /// Whatever arrived after the drain's last look is handed to the orphan channel, and
    /// later answers go there directly: nothing pulled is left unread.
    fn drop(&mut self) {
        self.inner.lock_routes().remove(&self.consumer);
        self.rx.close();
        while let Ok(reply) = self.rx.try_recv() {
            if let Reply::Message(m) = reply {
                self.inner.orphan(self.consumer.clone(), m);
            }
        }
    }
}

async fn route_answers(
    inner: Arc<Inner>,
    context: jetstream::Context,
    mut subscription: Subscriber,
    token: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = token.cancelled() => break,
            msg = subscription.next() => match msg {
                Some(msg) => msg,
                None => break,
            },
        };
        let Some((consumer, reply)) = classify(&inner.base, &context, msg) else {
            continue;
        };
        let routes = inner.lock_routes();
        let undelivered = match routes.get(&consumer) {
            Some(tx) => tx.send(reply).err().map(|e| e.0),
            None => Some(reply),
        };
        drop(routes);
        if let Some(Reply::Message(m)) = undelivered {
            inner.orphan(consumer, m);
        }
    }
    debug!("pull answer routing stopped");
}

/// The consumer an answer belongs to, and what it says; `None` for heartbeats and
/// anything not ours.
fn classify(
    base: &str,
    context: &jetstream::Context,
    msg: async_nats::Message,
) -> Option<(String, Reply)> {
    match msg.status {
        None | Some(StatusCode::OK) => {
            let message = Message {
                message: msg,
                context: context.clone(),
            };
            let consumer = message.info().ok()?.consumer.to_string();
            Some((consumer, Reply::Message(Box::new(message))))
        }
        Some(StatusCode::IDLE_HEARTBEAT) => None,
        Some(status) => {
            // `<base>.<consumer>.<request>`
            let rest = msg.subject.as_str().strip_prefix(base)?.strip_prefix('.')?;
            let (consumer, request) = rest.rsplit_once('.')?;
            let request = request.parse().ok()?;
            trace!(consumer, request, %status, description = ?msg.description, "pull ended");
            let gone = status == StatusCode::REQUEST_TERMINATED
                && msg
                    .description
                    .as_deref()
                    .is_some_and(|d| d.contains("Consumer Deleted"));
            let reply = if gone {
                Reply::Gone
            } else {
                Reply::End { request, status }
            };
            Some((consumer.to_string(), reply))
        }
    }
}
