//! Pulling only where there is work.
//!
//! A destination is *idle* (no task, no pull request, no timer, no memory beyond its
//! registry entry) until something says it may have work: the router's doorbell (it just
//! wrote deliveries for it), a retry time this worker scheduled itself, or the periodic
//! shard scan. Then one drain task pulls from its consumer (`dest_<id>` on its delivery
//! shard, created here when it is missing) in batches of up to its free in-flight slots,
//! runs the deliveries concurrently, and keeps pulling until a pull comes back empty with
//! nothing in flight and no new wake-up has arrived; then the destination is idle again.
//! See docs/adr/0001 and docs/adr/0010.

use std::collections::HashMap;
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
use super::pulls::{OpenPull, Pulls, sleep_until_or_never};
use super::timers::run_timers;
use async_nats::StatusCode;
use async_nats::jetstream::Message;

use crate::broker::pull::{Orphan, PullMux, Reply, Route};
use crate::broker::{BrokerErrorKind, consumers, names};
use crate::destinations::Registry;
use crate::flow::circuit::Gate;
use crate::model::DestinationId;
use crate::telemetry::metrics as m;

/// How long a drain waits after NATS failed to take or answer a pull.
const PULL_RETRY: Duration = Duration::from_secs(1);
/// How long a destination waits for room when its shard has no consumer slot left.
const CONSUMER_LIMIT_RETRY: Duration = Duration::from_secs(5);

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

/// How much a worker pulls and keeps in flight.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deliveries in flight in this worker, all destinations together.
    pub max_in_flight_total: usize,
    /// Largest pull.
    pub pull_batch: usize,
    /// How long an unanswered pull is waited for.
    pub request_timeout: Duration,
    /// How long a delivery holds its slot of `max_in_flight_total`; `None`: to its end.
    /// Measured (`make bench`, failure mix): with the slot held for the whole request, 10
    /// hanging destinations out of 100 took 640 of the 1,024 slots for their whole
    /// timeout and the healthy destinations lost 40 % of their rate.
    pub slow_delivery: Option<Duration>,
}

pub struct Dispatcher {
    active: Mutex<HashMap<Arc<str>, Arc<Slot>>>,
    registry: Arc<Registry>,
    mux: PullMux,
    deliverer: Arc<Deliverer>,
    limits: Limits,
    /// Deliveries in flight in this worker, all destinations together: a permit each.
    permits: Arc<Semaphore>,
    /// The size of that budget: no pull asks for more (it could never get its permits).
    budget: usize,
    timers: mpsc::UnboundedSender<(Instant, Arc<str>)>,
    tracker: TaskTracker,
    token: CancellationToken,
}

impl Dispatcher {
    pub fn start(
        registry: Arc<Registry>,
        (mux, orphans): (PullMux, mpsc::UnboundedReceiver<Orphan>),
        deliverer: Arc<Deliverer>,
        limits: Limits,
        tracker: TaskTracker,
        token: CancellationToken,
    ) -> Arc<Self> {
        let (timers, timer_rx) = mpsc::unbounded_channel();
        let dispatcher = Arc::new(Self {
            active: Mutex::new(HashMap::new()),
            registry,
            mux,
            deliverer,
            limits,
            permits: Arc::new(Semaphore::new(limits.max_in_flight_total)),
            budget: limits.max_in_flight_total.max(1),
            timers,
            tracker: tracker.clone(),
            token: token.clone(),
        });
        tracker.spawn(run_timers(
            Arc::downgrade(&dispatcher),
            timer_rx,
            token.clone(),
        ));
        tracker.spawn(deliver_orphans(Arc::downgrade(&dispatcher), orphans, token));
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
        let mut active = self.active_lock();
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

    fn active_lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Slot>>> {
        self.active
            .lock()
            .expect("dispatcher lock is never poisoned")
    }

    /// Destinations being drained right now.
    pub fn active_count(&self) -> usize {
        self.active_lock().len()
    }

    async fn drain(self: Arc<Self>, id: Arc<str>, slot: Arc<Slot>) {
        let mut in_flight: JoinSet<Handled> = JoinSet::new();
        let Ok(dest_id) = DestinationId::parse(id.to_string()) else {
            self.active_lock().remove(&id);
            return;
        };
        let shard = self.deliverer.broker.shard_of(&id);
        let mut route = self.mux.open(
            &names::delivery_stream(shard),
            &names::consumer_name(&dest_id),
        );
        let mut pulls = Pulls::default();
        loop {
            slot.dirty.store(false, Ordering::Release);
            self.drain_once(&id, &slot, &mut route, &mut pulls, &mut in_flight)
                .await;
            // Leave only when nothing is in flight and no signal came in meanwhile; the
            // check and the removal happen under the lock that `signal` takes. Answers
            // still on their way go to the orphan channel once the route is dropped.
            if in_flight.is_empty() {
                let mut active = self.active_lock();
                if !slot.dirty.load(Ordering::Acquire) || self.token.is_cancelled() {
                    active.remove(&id);
                    return;
                }
            }
        }
    }

    /// Pulls and delivers until nothing is announced, no pull is open and nothing is in
    /// flight (or the destination stops being deliverable).
    async fn drain_once(
        &self,
        id: &Arc<str>,
        slot: &Slot,
        route: &mut Route,
        pulls: &mut Pulls,
        in_flight: &mut JoinSet<Handled>,
    ) {
        loop {
            // Read the destination on every round: a change (URL, secret, pause) applies
            // from the next pull on, not only after the backlog is gone.
            let destination = match self.registry.get(id) {
                Some(d) if d.is_active() && !self.token.is_cancelled() => d,
                _ => {
                    pulls.abandon();
                    self.finish(id, in_flight).await;
                    return;
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
                    pulls.abandon();
                    self.finish(id, in_flight).await;
                    self.signal_at(id, Instant::now() + left + Duration::from_millis(50));
                    return;
                }
                Gate::HalfOpen => {
                    limit = limit.min(self.deliverer.flow.circuits.policy().probes as usize);
                }
            }
            let announced = slot.hint.swap(0, Ordering::AcqRel);
            if announced > 0 {
                pulls.owed += announced;
                pulls.announced = true;
            }
            let recheck_due = pulls.recheck_at.is_none_or(|at| at <= Instant::now());
            if pulls.open.is_none() && pulls.owed > 0 && recheck_due {
                pulls.recheck_at = None;
                let batch = limit.min(self.limits.pull_batch);
                let free = limit.saturating_sub(in_flight.len()).min(batch);
                // While draining a backlog, wait until half a batch of slots is free
                // instead of paying a pull round trip per finished delivery.
                let want = free.min(pulls.owed).min(self.budget);
                if want > 0 && (in_flight.is_empty() || free >= batch.min(pulls.owed).div_ceil(2)) {
                    let Ok(permits) = self.permits.clone().acquire_many_owned(want as u32).await
                    else {
                        return;
                    };
                    metrics::counter!(m::PULLS).increment(1);
                    match route.request(want).await {
                        Ok(request) => {
                            tracing::trace!(destination_id = %id, want, request, "pull");
                            pulls.open = Some(OpenPull {
                                request,
                                asked: want,
                                left: want,
                                permits,
                                sent: Instant::now(),
                            });
                            pulls.owed -= want;
                        }
                        Err(e) => {
                            warn!(destination_id = %id, error = %e, "pull failed; trying again shortly");
                            drop(permits);
                            self.retry_shortly(id, in_flight).await;
                            return;
                        }
                    }
                }
            }
            if pulls.open.is_none()
                && pulls.owed == 0
                && in_flight.is_empty()
                && pulls.recheck_at.is_none()
            {
                return;
            }
            // An open pull that the server keeps (its ack-pending slots are taken, by
            // another replica say) is given up here after a while; its messages, if they
            // come, still arrive through the route or the orphan channel.
            let give_up_at = pulls
                .open
                .as_ref()
                .map(|p| p.sent + self.limits.request_timeout);
            tokio::select! {
                reply = route.recv() => match reply {
                    Some(Reply::Message(msg)) => {
                        self.deliver_pulled(id, &destination, msg, pulls, in_flight);
                    }
                    Some(Reply::End { request, status }) => {
                        if pulls.open.as_ref().is_some_and(|p| p.request == request) {
                            tracing::trace!(destination_id = %id, request, %status, "pull ended");
                            pulls.open = None;
                            if status == StatusCode::NO_RESPONDERS {
                                // No consumer (never made, or removed idle by the server):
                                // make it from the destination and pull again. Twice in a
                                // row: JetStream itself is not answering.
                                if std::mem::replace(&mut pulls.created, true) {
                                    warn!(destination_id = %id, "JetStream did not answer a pull; trying again shortly");
                                    pulls.created = false;
                                    self.retry_shortly(id, in_flight).await;
                                    return;
                                }
                                match self.create_consumer(&destination).await {
                                    Ok(()) => {
                                        pulls.owed = pulls.owed.max(1);
                                        continue;
                                    }
                                    Err(delay) => {
                                        self.finish(id, in_flight).await;
                                        self.signal_at(id, Instant::now() + delay);
                                        return;
                                    }
                                }
                            }
                            // 404: nothing ready now. What becomes ready later is announced
                            // (a signal per event, a timer per retry, the sweep).
                            pulls.owed = 0;
                            pulls.recheck_if_announced();
                        }
                    }
                    Some(Reply::Gone) | None => {
                        debug!(destination_id = %id, "consumer gone; stop draining");
                        pulls.abandon();
                        self.finish(id, in_flight).await;
                        return;
                    }
                },
                done = in_flight.join_next(), if !in_flight.is_empty() => self.after(id, done),
                _ = slot.wake.notified() => {}
                _ = sleep_until_or_never(pulls.recheck_at) => {}
                _ = sleep_until_or_never(give_up_at) => {
                    debug!(destination_id = %id, "an open pull is not answered; giving it up");
                    pulls.abandon();
                    pulls.owed = 0;
                }
            }
            self.collect_finished(id, in_flight);
        }
    }

    /// Starts the delivery of one pulled message, with a slot of the open pull's permits
    /// (or, for a message of a pull already given up, without: the consumer's
    /// max_ack_pending still bounds those).
    fn deliver_pulled(
        &self,
        id: &str,
        destination: &Arc<crate::model::Destination>,
        msg: Box<Message>,
        pulls: &mut Pulls,
        in_flight: &mut JoinSet<Handled>,
    ) {
        let mut permit = None;
        pulls.got_message();
        if let Some(open) = pulls.open.as_mut() {
            permit = open.permits.split(1);
            open.left = open.left.saturating_sub(1);
            if open.left == 0 {
                // The whole batch came. Each message carries the consumer's count of what
                // is still waiting after it, exact for a single-literal-filter consumer
                // (docs/adr/0010): pull again only if it says more waits. What the router
                // stores later rings the doorbell, a retry has its timer, and a delivery
                // redelivered after its ack wait is found by the shard scan. (The layout
                // before routing looked once more after every full batch: its counts
                // lagged, and at 1,000 destinations that empty look was half the pulls.)
                let pending = msg.info().map_or(0, |info| info.pending as usize);
                pulls.owed = pulls.owed.max(pending);
                tracing::trace!(destination_id = %id, asked = open.asked, pending, "pull complete");
                pulls.open = None;
            }
        }
        let deliverer = self.deliverer.clone();
        let destination = destination.clone();
        let slow = self.limits.slow_delivery;
        in_flight.spawn(async move {
            // Boxed: the delivery's state machine is large, and a task is moved as a
            // whole when it is spawned and polled (those copies were 3 % of the worker's
            // CPU per delivery); a box is allocated once and never moved.
            let mut work = Box::pin(deliverer.handle(&destination, *msg));
            tokio::select! {
                out = &mut work => return out,
                _ = sleep_until_or_never(slow.map(|d| Instant::now() + d)) => {}
            }
            // A receiver this slow costs a connection, not the worker's CPU: its slot in
            // the worker's budget goes to the others (the destination's own max_in_flight
            // still holds it), so that hanging receivers cannot starve healthy ones.
            drop(permit);
            work.await
        });
    }

    /// Creates the destination's consumer on its shard (create-or-update: replicas doing
    /// it together agree). On failure answers when to try again.
    async fn create_consumer(
        &self,
        destination: &crate::model::Destination,
    ) -> Result<(), Duration> {
        let broker = &self.deliverer.broker;
        let id = destination.id.as_str();
        let config = consumers::desired_config(
            destination,
            &broker.subjects,
            broker.shard_of(id),
            self.deliverer.consumer_policy,
        );
        match consumers::upsert(broker.shard_stream(id), config).await {
            Ok(_) => {
                debug!(destination_id = %id, "consumer created");
                metrics::counter!(m::CONSUMERS_CREATED).increment(1);
                Ok(())
            }
            Err(e) if e.kind == BrokerErrorKind::ConsumerLimit => {
                // Its deliveries wait in the shard until idle consumers make room.
                warn!(destination_id = %id, error = %e, "shard at its consumer limit (events.max_consumers); deliveries wait");
                Err(CONSUMER_LIMIT_RETRY)
            }
            Err(e) => {
                warn!(destination_id = %id, error = %e, "consumer not created; trying again shortly");
                Err(PULL_RETRY)
            }
        }
    }

    /// NATS could not take or answer a pull: let what is in flight finish and come back
    /// in a second.
    async fn retry_shortly(&self, id: &Arc<str>, in_flight: &mut JoinSet<Handled>) {
        self.finish(id, in_flight).await;
        self.signal_at(id, Instant::now() + PULL_RETRY);
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

/// Messages that came after their drain ended (answers to a pull given up, or arriving
/// while the drain was leaving): delivered like any other, outside the in-flight budget
/// (the consumer's max_ack_pending bounds them). At shutdown they are released for
/// redelivery instead.
async fn deliver_orphans(
    dispatcher: std::sync::Weak<Dispatcher>,
    mut orphans: mpsc::UnboundedReceiver<Orphan>,
    token: CancellationToken,
) {
    while let Some((consumer, msg)) = orphans.recv().await {
        let Some(dispatcher) = dispatcher.upgrade() else {
            return;
        };
        let destination =
            names::destination_of_consumer(&consumer).and_then(|id| dispatcher.registry.get(id));
        let Some(destination) = destination.filter(|_| !token.is_cancelled()) else {
            // Unknown here (just deleted, or not loaded yet) or shutting down: let the
            // server hand it out again.
            if let Err(e) = msg
                .ack_with(async_nats::jetstream::AckKind::Nak(None))
                .await
            {
                debug!(error = %e, "nak of an orphaned message not sent");
            }
            continue;
        };
        tracing::trace!(%consumer, "late message");
        let deliverer = dispatcher.deliverer.clone();
        let weak = Arc::downgrade(&dispatcher);
        dispatcher.tracker.spawn(async move {
            if let Handled::RetryIn(delay) = deliverer.handle(&destination, *msg).await
                && let Some(dispatcher) = weak.upgrade()
            {
                dispatcher.signal_at(destination.id.as_str(), Instant::now() + delay);
            }
        });
    }
}
