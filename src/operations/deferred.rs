//! Circuit announcements put off by the interval (a flapping circuit): one timer per
//! destination with an announcement pending, in the replica whose attempt changed the
//! circuit. When it fires, the state the circuit is in then is announced if its
//! subscribers were told otherwise, the interval is over (both checked again in the
//! circuit's compare-and-set, so two replicas' timers announce it once) and an attempt
//! that was not an operational event's brought it there (the context kept here).
//!
//! A replica that stops takes its timers with it; the next change of that circuit is
//! announced as usual (docs/adr/0013).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::{Context, circuit_notice_of, notice};
use crate::broker::Broker;
use crate::flow::circuit::{Circuits, Claimed, Deferral, Phase};
use crate::model::{Destination, DestinationId, TenantId};

/// After a failed claim (NATS trouble), try again this much later.
const RETRY: Duration = Duration::from_secs(1);

pub struct Deferred {
    broker: Broker,
    circuits: Arc<Circuits>,
    interval: Duration,
    tracker: TaskTracker,
    token: CancellationToken,
    /// Destinations with a timer running, and what to say when it fires.
    pending: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    tenant: TenantId,
    /// The last attempt that opened the circuit, or the last one that closed it: only the
    /// newer of the two is kept, the other no longer holds.
    open: Option<Context>,
    closed: Option<Context>,
}

impl Pending {
    fn slot(&mut self, open: bool) -> &mut Option<Context> {
        if open {
            &mut self.open
        } else {
            &mut self.closed
        }
    }

    fn is_empty(&self) -> bool {
        self.open.is_none() && self.closed.is_none()
    }
}

impl Deferred {
    pub fn new(
        broker: Broker,
        circuits: Arc<Circuits>,
        interval: Duration,
        tracker: TaskTracker,
        token: CancellationToken,
    ) -> Self {
        Self {
            broker,
            circuits,
            interval,
            tracker,
            token,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Remembers what to announce when `deferral` is due; starts the destination's timer
    /// unless it runs already.
    pub fn put(self: &Arc<Self>, destination: &Destination, deferral: Deferral, context: Context) {
        let id = destination.id.as_str();
        let mut pending = self.pending.lock().expect("pending lock is never poisoned");
        let running = pending.contains_key(id);
        let entry = pending.entry(id.to_string()).or_insert_with(|| Pending {
            tenant: destination.tenant.clone(),
            open: None,
            closed: None,
        });
        *entry.slot(deferral.open) = Some(context);
        *entry.slot(!deferral.open) = None;
        if !running {
            let me = self.clone();
            let id = destination.id.clone();
            self.tracker.spawn(me.run(id, deferral.due));
        }
    }

    async fn run(self: Arc<Self>, id: DestinationId, mut due: DateTime<Utc>) {
        loop {
            let wait = (due - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = self.token.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let open = self.circuits.view(id.as_str()).state != Phase::Closed;
            let Some((tenant, context)) = self.take(id.as_str(), open) else {
                return;
            };
            match self.circuits.claim_due(&id, open, self.interval).await {
                Ok(Claimed::News(news)) => {
                    let notice = circuit_notice_of(&tenant, id.as_str(), &news, &context);
                    notice::publish(&self.broker, notice).await;
                    if self.finished(id.as_str()) {
                        return;
                    }
                    due = Utc::now();
                }
                Ok(Claimed::Later(next)) => {
                    self.restore(id.as_str(), open, context);
                    due = next;
                }
                Ok(Claimed::Nothing) => {
                    if self.finished(id.as_str()) {
                        return;
                    }
                    due = Utc::now();
                }
                Err(e) => {
                    warn!(destination_id = %id, error = %e, "circuit announcement not claimed; trying again");
                    self.restore(id.as_str(), open, context);
                    due = Utc::now() + chrono::Duration::from_std(RETRY).unwrap_or_default();
                }
            }
        }
    }

    /// The context for the circuit's current state, if an attempt that announces brought
    /// it there; `None` ends the timer.
    fn take(&self, id: &str, open: bool) -> Option<(TenantId, Context)> {
        let mut pending = self.pending.lock().expect("pending lock is never poisoned");
        let entry = pending.get_mut(id)?;
        match entry.slot(open).take() {
            Some(context) => {
                *entry.slot(!open) = None;
                Some((entry.tenant.clone(), context))
            }
            None => {
                pending.remove(id);
                None
            }
        }
    }

    /// Puts a context back, unless a newer one came meanwhile.
    fn restore(&self, id: &str, open: bool, context: Context) {
        let mut pending = self.pending.lock().expect("pending lock is never poisoned");
        if let Some(entry) = pending.get_mut(id)
            && entry.is_empty()
        {
            *entry.slot(open) = Some(context);
        }
    }

    /// Ends the timer unless a change came meanwhile.
    fn finished(&self, id: &str) -> bool {
        let mut pending = self.pending.lock().expect("pending lock is never poisoned");
        if pending.get(id).is_some_and(|e| !e.is_empty()) {
            return false;
        }
        pending.remove(id);
        true
    }
}
