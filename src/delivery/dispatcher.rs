//! Pulling only where there is work.
//!
//! A destination is *idle* (no task, no pull request, no timer, no memory beyond its
//! registry entry) until something says it may have work: a new event on one of its
//! subjects (the signal), a retry time this worker scheduled itself, or the periodic
//! sweep. Then one drain task pulls from its consumer in batches of up to its free
//! in-flight slots, runs the deliveries concurrently, and keeps pulling until a pull
//! comes back empty with nothing in flight and no new signal has arrived; then the
//! destination is idle again. See docs/adr/0001-pull-only-where-there-is-work.md.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::attempt::{Deliverer, Handled};
use super::registry::Registry;
use crate::broker::pull::Puller;
use crate::broker::{BrokerErrorKind, names};
use crate::flow::circuit::Gate;
use crate::model::DestinationId;
use crate::telemetry::metrics as m;

/// A destination that is being drained.
struct Slot {
    /// Set by a signal that arrives while the drain task runs: pull once more.
    dirty: AtomicBool,
    wake: Notify,
    /// How many messages the signals since the last pull announced (events seen, or the
    /// backlog a sweep found): the size of the next pull, so that a destination with two
    /// events does not reserve sixty-four in-flight slots of the worker's budget.
    hint: AtomicUsize,
}

pub struct Dispatcher {
    active: Mutex<HashMap<Arc<str>, Arc<Slot>>>,
    registry: Arc<Registry>,
    puller: Puller,
    deliverer: Arc<Deliverer>,
    /// Deliveries in flight in this worker, all destinations together.
    permits: Arc<Semaphore>,
    pull_batch: usize,
    timers: mpsc::UnboundedSender<(Instant, Arc<str>)>,
    tracker: TaskTracker,
    token: CancellationToken,
}

impl Dispatcher {
    pub fn start(
        registry: Arc<Registry>,
        puller: Puller,
        deliverer: Arc<Deliverer>,
        max_in_flight_total: usize,
        pull_batch: usize,
        tracker: TaskTracker,
        token: CancellationToken,
    ) -> Arc<Self> {
        let (timers, timer_rx) = mpsc::unbounded_channel();
        let dispatcher = Arc::new(Self {
            active: Mutex::new(HashMap::new()),
            registry,
            puller,
            deliverer,
            permits: Arc::new(Semaphore::new(max_in_flight_total)),
            pull_batch,
            timers,
            tracker: tracker.clone(),
            token: token.clone(),
        });
        tracker.spawn(run_timers(Arc::downgrade(&dispatcher), timer_rx, token));
        dispatcher
    }

    /// Says that `destination` may have work (one more event). Cheap and idempotent.
    pub fn signal(self: &Arc<Self>, destination: &str) {
        self.signal_with_hint(destination, 1);
    }

    /// Says that `destination` may have about `messages` messages waiting.
    pub fn signal_with_hint(self: &Arc<Self>, destination: &str, messages: usize) {
        tracing::trace!(destination_id = %destination, messages, "wake");
        if self.token.is_cancelled() {
            return;
        }
        let mut active = self
            .active
            .lock()
            .expect("dispatcher lock is never poisoned");
        if let Some(slot) = active.get(destination) {
            slot.hint.fetch_add(messages, Ordering::AcqRel);
            slot.dirty.store(true, Ordering::Release);
            slot.wake.notify_one();
            return;
        }
        let id: Arc<str> = Arc::from(destination);
        let slot = Arc::new(Slot {
            dirty: AtomicBool::new(false),
            wake: Notify::new(),
            hint: AtomicUsize::new(messages),
        });
        active.insert(id.clone(), slot.clone());
        drop(active);
        let this = self.clone();
        self.tracker
            .spawn(async move { this.drain(id, slot).await });
    }

    /// Pull again at `at` (a retry this worker scheduled).
    pub fn signal_at(&self, destination: &str, at: Instant) {
        let _ = self.timers.send((at, Arc::from(destination)));
    }

    /// Destinations being drained right now.
    pub fn active_count(&self) -> usize {
        self.active
            .lock()
            .expect("dispatcher lock is never poisoned")
            .len()
    }

    async fn drain(self: Arc<Self>, id: Arc<str>, slot: Arc<Slot>) {
        let mut in_flight: JoinSet<Handled> = JoinSet::new();
        loop {
            slot.dirty.store(false, Ordering::Release);
            let drained = self.drain_once(&id, &slot, &mut in_flight).await;
            // Leave only when nothing is in flight and no signal came in meanwhile; the
            // check and the removal happen under the lock that `signal` takes.
            if drained && in_flight.is_empty() {
                let mut active = self
                    .active
                    .lock()
                    .expect("dispatcher lock is never poisoned");
                if !slot.dirty.load(Ordering::Acquire) || self.token.is_cancelled() {
                    active.remove(&id);
                    return;
                }
            }
        }
    }

    /// Pulls and delivers until a pull comes back empty with nothing in flight. Returns
    /// `true` when the destination looks drained.
    async fn drain_once(
        &self,
        id: &Arc<str>,
        slot: &Slot,
        in_flight: &mut JoinSet<Handled>,
    ) -> bool {
        let Ok(dest_id) = DestinationId::parse(id.to_string()) else {
            return true;
        };
        let consumer = names::consumer_name(&dest_id);
        // Messages known to be waiting: announced (signals, sweep backlog, retry timers)
        // and, after each pull, the consumer's own count of what is left.
        let mut owed = 0usize;
        let mut retried_empty = false;
        loop {
            // Read the destination on every round: a change (URL, secret, pause) applies
            // from the next pull on, not only after the backlog is gone.
            let destination = match self.registry.get(id) {
                Some(d) if d.is_active() && !self.token.is_cancelled() => d,
                _ => {
                    self.finish(id, in_flight).await;
                    return true;
                }
            };
            let mut limit = if destination.ordered {
                1
            } else {
                destination.max_in_flight.max(1) as usize
            };
            // An open circuit: no pulls until the cool-down ends (its timer wakes the
            // destination); half-open: no more than the probes.
            match self.deliverer.flow.circuits.gate(id) {
                Gate::Closed => {}
                Gate::Open(left) => {
                    self.finish(id, in_flight).await;
                    self.signal_at(id, Instant::now() + left + Duration::from_millis(50));
                    return true;
                }
                Gate::HalfOpen => {
                    limit = limit.min(self.deliverer.flow.circuits.policy().probes as usize);
                }
            }
            let batch = limit.min(self.pull_batch);
            let free = limit.saturating_sub(in_flight.len()).min(batch);
            // While draining a backlog, wait until half a batch of slots is free instead of
            // paying a pull round trip per finished delivery.
            let bulk = owed > 0 && free < batch.div_ceil(2) && !in_flight.is_empty();
            if free == 0 || bulk {
                let done = in_flight.join_next().await;
                self.after(id, done);
                self.collect_finished(id, in_flight);
                continue;
            }
            owed += slot.hint.swap(0, Ordering::AcqRel);
            if owed == 0 {
                // Nothing announced: every way a message becomes ready announces it (a
                // signal per event, a timer per retry, the sweep for the rest), so an
                // empty pull here would only cost the server a filtered scan.
                if in_flight.is_empty() {
                    return true;
                }
                tokio::select! {
                    done = in_flight.join_next() => self.after(id, done),
                    _ = slot.wake.notified() => {}
                }
                self.collect_finished(id, in_flight);
                continue;
            }
            let want = free.min(owed);
            let announced = owed;
            let Ok(mut permits) = self.permits.clone().acquire_many_owned(want as u32).await else {
                return true;
            };
            metrics::counter!(m::PULLS).increment(1);
            // Messages the server sends after the pull returned (see `Puller::fetch`) are
            // delivered as they come, outside this round's accounting; the consumer's
            // max_ack_pending still bounds them.
            let late = {
                let deliverer = self.deliverer.clone();
                let destination = destination.clone();
                let tracker = self.tracker.clone();
                move |msg| {
                    let deliverer = deliverer.clone();
                    let destination = destination.clone();
                    tracker.spawn(async move { deliverer.handle(&destination, msg).await });
                }
            };
            let messages = match self.puller.fetch(&consumer, want, late).await {
                Ok(messages) => messages,
                Err(e) if e.kind == BrokerErrorKind::NotFound => {
                    debug!(destination_id = %id, "consumer gone; stop draining");
                    self.finish(id, in_flight).await;
                    return true;
                }
                Err(e) => {
                    warn!(destination_id = %id, error = %e, "pull failed; trying again shortly");
                    drop(permits);
                    self.finish(id, in_flight).await;
                    self.signal_at(id, Instant::now() + Duration::from_secs(1));
                    return true;
                }
            };
            let pulled = messages.len();
            tracing::trace!(destination_id = %id, want, pulled, "pulled");
            if pulled == 0 && announced > 0 && !retried_empty {
                // JetStream processes acks asynchronously: right after a batch finished,
                // the consumer may still count its slots as taken and answer nothing.
                // Look once more shortly rather than leave the backlog to the sweep. (Once:
                // if the messages went to another replica, or wait for their retry time,
                // that replica, the retry timer or the sweep wakes the destination.)
                retried_empty = true;
                owed = announced;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = slot.wake.notified() => {}
                }
                continue;
            }
            if pulled > 0 {
                retried_empty = false;
            }
            // The pull may have waited: take the destination as it is now, so a change
            // made meanwhile (which the consumer may already follow) applies.
            let destination = self.registry.get(id).unwrap_or(destination);
            // Each message carries the consumer's count of messages still waiting after
            // it. Measured: with many filtered consumers that count can lag, so a full pull
            // is always followed by one more look; a short one is trusted.
            let left = messages
                .last()
                .and_then(|m| m.info().ok())
                .map_or(0, |info| info.pending as usize);
            owed = match pulled {
                0 => 0,
                n if n == want => left.max(1),
                _ => left,
            };
            for msg in messages {
                let permit = permits.split(1).expect("one permit per pulled message");
                let deliverer = self.deliverer.clone();
                let destination = destination.clone();
                in_flight.spawn(async move {
                    let _permit = permit;
                    deliverer.handle(&destination, msg).await
                });
            }
            drop(permits);
            if pulled == 0 && in_flight.is_empty() {
                return true;
            }
            if pulled < want {
                // The consumer had fewer messages ready than asked for: wait for a delivery
                // to finish or a new signal before pulling again, instead of spinning.
                tokio::select! {
                    done = in_flight.join_next() => self.after(id, done),
                    _ = slot.wake.notified() => {}
                }
            }
            self.collect_finished(id, in_flight);
        }
    }

    /// Takes the results of deliveries that have finished, without waiting.
    fn collect_finished(&self, id: &str, in_flight: &mut JoinSet<Handled>) {
        while let Some(done) = in_flight.try_join_next() {
            self.after(id, Some(done));
        }
    }

    /// Waits for the deliveries in flight (shutdown, pause, deletion).
    async fn finish(&self, id: &Arc<str>, in_flight: &mut JoinSet<Handled>) {
        while let Some(done) = in_flight.join_next().await {
            self.after(id, Some(done));
        }
    }

    fn after(&self, id: &str, done: Option<Result<Handled, tokio::task::JoinError>>) {
        match done {
            Some(Ok(Handled::RetryIn(delay))) => self.signal_at(id, Instant::now() + delay),
            Some(Ok(Handled::Done)) | None => {}
            Some(Err(e)) => warn!(destination_id = %id, error = %e, "delivery task failed"),
        }
    }
}

/// One timer task for all scheduled retries: a heap of (when, destination).
async fn run_timers(
    dispatcher: std::sync::Weak<Dispatcher>,
    mut rx: mpsc::UnboundedReceiver<(Instant, Arc<str>)>,
    token: CancellationToken,
) {
    let mut heap: BinaryHeap<Reverse<(Instant, Arc<str>)>> = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|Reverse((at, _))| *at);
        tokio::select! {
            _ = token.cancelled() => return,
            item = rx.recv() => match item {
                Some(entry) => heap.push(Reverse(entry)),
                None => return,
            },
            _ = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(dispatcher) = dispatcher.upgrade() else { return };
                let now = Instant::now();
                while let Some(Reverse((at, _))) = heap.peek() {
                    if *at > now {
                        break;
                    }
                    let Some(Reverse((_, id))) = heap.pop() else { break };
                    dispatcher.signal(&id);
                }
            }
        }
    }
}
