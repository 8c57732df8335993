//! The router (docs/adr/0010): reads every event once, through the durable `hs_router_all`
//! consumer on `HS_EVENTS` (no filter), and writes one delivery message per matching
//! destination to its shard `hs.dlv.<k>.<destination_id>`.
//!
//! - One replica routes at a time: the consumer's `pinned_client` priority group pins one
//!   puller and keeps the others on standby; when the pinned one stops pulling for
//!   `ROUTER_PIN_TIMEOUT` another is pinned. So the order of `HS_EVENTS` is the order of
//!   every destination's deliveries.
//! - Events are routed in windows of what has arrived: every delivery of the window is
//!   published at once (pipelined), with `Nats-Msg-Id` = `<event seq>.<destination>`, and
//!   the window is acked (one ack-all of its last event) only after every PubAck. A crash
//!   routes the window again with the same ids, and JetStream drops the copies.
//! - A window continues from the router's floor (`floor.rs`, docs/adr/0019): after a
//!   takeover, the events the previous router held are routed before anything newer, and
//!   no ack-all passes over them.
//! - The destinations come from the registry; before a window is routed, the registry
//!   must have applied every destination write the bucket held when the window was taken,
//!   so a destination created before an event was published receives it, whichever
//!   replica created it.
//! - After the PubAcks it rings the doorbell with the destinations that got deliveries.
//! - It imports nothing of `delivery/` but the one dead-letter path and the counters.

mod decide;
mod floor;
pub mod upgrade;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::{AckKind, Message};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use decide::{Decision, decide};
use floor::{Gap, Held, Taken};

use crate::broker::names::{self, headers as h};
use crate::broker::setup::ROUTER_ACK_WAIT;
use crate::broker::{Broker, BrokerError, BrokerErrorKind, doorbell};
use crate::delivery::dead_letter;
use crate::delivery::stats::StatsCounters;
use crate::destinations::Registry;
use crate::dlq::{DeadLetter, DlqReason};
use crate::ingest::AcceptedRecord;
use crate::telemetry::metrics as m;

/// Events routed together at most.
const WINDOW: usize = 1_000;
/// Publishes awaiting their PubAck at most; beyond, the oldest is awaited first.
const IN_FLIGHT: usize = 4_096;
/// How long a window waits for the registry to apply destination writes it is behind.
const FRESHNESS_PATIENCE: Duration = Duration::from_secs(2);
/// How often events waiting above a gap look again whether the gap is settled.
const GAP_RECHECK: Duration = Duration::from_millis(250);

pub struct Router {
    pub broker: Broker,
    pub registry: Arc<Registry>,
    pub stats: Arc<StatsCounters>,
    /// Where the doorbell rings (`names::doorbell_subject`).
    pub doorbell: String,
    pub token: CancellationToken,
}

/// One publish of a window, kept until its PubAck so that it can be sent again.
struct Pending {
    subject: Subject,
    /// Taken by the first send (no copy on the way out); a resend builds them again.
    headers: Option<HeaderMap>,
    payload: Bytes,
    ack: Option<PublishAckFuture>,
    /// For a delivery: its event (index in the window), destination and tenant.
    delivery: Option<(usize, Arc<str>, String)>,
    /// The shard refused it: the destination is at `events.delivery_max_per_destination`.
    backlog_full: bool,
}

impl Pending {
    fn new(subject: String, headers: HeaderMap, payload: Bytes) -> Self {
        Self {
            subject: Subject::from(subject),
            headers: Some(headers),
            payload,
            ack: None,
            delivery: None,
            backlog_full: false,
        }
    }
}

/// Whether a PubAck error is the shard's per-destination limit (nats-server's
/// `ErrMaxMsgsPerSubject`), not a full shard.
fn is_backlog_full(error: &BrokerError) -> bool {
    error.kind == BrokerErrorKind::SubjectFull
}

impl Router {
    /// Pulls as the pinned client (or waits on standby) until cancelled.
    pub async fn run(self) {
        while !self.token.is_cancelled() {
            match self.subscribe().await {
                Ok((messages, floor)) => self.route_stream(messages, floor).await,
                Err(e) => {
                    warn!(error = %e, "router not subscribed yet; retrying");
                    self.pause(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The pull stream, and the consumer's ack floor (where this router's floor starts).
    async fn subscribe(&self) -> Result<(pull::Stream, u64), BrokerError> {
        let consumer: async_nats::jetstream::consumer::PullConsumer = self
            .broker
            .events
            .get_consumer(names::ROUTER_CONSUMER)
            .await
            .map_err(|e| BrokerError::new("looking up the router consumer", e))?;
        let floor = consumer.cached_info().ack_floor.stream_sequence;
        let messages = consumer
            .stream()
            .group(names::ROUTER_GROUP)
            .max_messages_per_batch(WINDOW)
            // Pulls well inside the pin timeout, so the pin is never lost between them.
            .expires(Duration::from_secs(2))
            .heartbeat(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| BrokerError::new("pulling from the router consumer", e))?;
        Ok((messages, floor))
    }

    async fn route_stream(&self, mut messages: pull::Stream, floor: u64) {
        let mut held = Held::new(floor);
        let mut gap_checked: Option<Instant> = None;
        let mut kept_alive = Instant::now();
        loop {
            // Held events that continue from the floor are routed without waiting (more
            // than a window waited above a gap); above a gap, it is looked at again even
            // if nothing arrives.
            let ready = !held.is_empty() && held.gap().is_none();
            let waiting = !held.is_empty() && !ready;
            let next = tokio::select! {
                _ = self.token.cancelled() => return,
                next = messages.next() => Some(next),
                _ = std::future::ready(()), if ready => None,
                _ = tokio::time::sleep(GAP_RECHECK), if waiting => None,
            };
            match next {
                Some(Some(Ok(msg))) => self.hold(&mut held, msg).await,
                Some(Some(Err(e))) => debug!(error = %e, "router pull"),
                Some(None) => {
                    info!("router stream ended; subscribing again");
                    return;
                }
                None => {}
            }
            for _ in 0..WINDOW {
                match messages.next().now_or_never() {
                    Some(Some(Ok(msg))) => self.hold(&mut held, msg).await,
                    _ => break,
                }
            }
            let mut window = held.run(WINDOW);
            if window.is_empty()
                && !held.is_empty()
                && gap_checked.is_none_or(|at| at.elapsed() >= GAP_RECHECK)
            {
                gap_checked = Some(Instant::now());
                window = match floor::settle_gap(&self.broker.events, &mut held).await {
                    Gap::Closed => held.run(WINDOW),
                    Gap::NobodyElseHolds => held.all(WINDOW),
                    Gap::Open => Vec::new(),
                };
            }
            if window.is_empty() {
                if !held.is_empty() && kept_alive.elapsed() >= ROUTER_ACK_WAIT / 3 {
                    kept_alive = Instant::now();
                    debug!(
                        held = held.len(),
                        "events wait for the ones another router held"
                    );
                    for msg in held.messages() {
                        let _ = msg.ack_with(AckKind::Progress).await;
                    }
                }
                continue;
            }
            let last = window
                .last()
                .and_then(|msg| msg.info().ok())
                .map_or(0, |info| info.stream_sequence);
            if !self.route_window(window, &mut held).await {
                return;
            }
            held.routed(last);
        }
    }

    /// Takes a pulled event; one at or below the floor was routed already (its ack was
    /// not seen in time): acked again.
    async fn hold(&self, held: &mut Held, msg: Message) {
        if let Taken::Settled(msg) = held.take(msg) {
            self.ack_through(&msg, held).await;
        }
    }

    /// An ack-all of `last`: every event up to it is settled on the server.
    async fn ack_through(&self, last: &Message, held: &mut Held) {
        let Ok(info) = last.info() else { return };
        // An ack-all with an older delivery sequence than the last one is ignored by the
        // server (after a takeover, redelivered events carry newer ones than events
        // pulled before them): the events come back after the ack wait and are acked then.
        if held.ack_counts(info.consumer_sequence)
            && let Err(e) = last.ack().await
        {
            // Routed again after the ack wait, with the same ids: no duplicate deliveries.
            warn!(error = %e, "router ack not sent");
        }
    }

    /// Routes a window and acks it; answers false when cancelled before the ack.
    async fn route_window(&self, window: Vec<Message>, held: &mut Held) -> bool {
        self.wait_for_fresh_registry().await;
        let mut pending: Vec<Pending> = Vec::new();
        let mut in_flight: VecDeque<usize> = VecDeque::new();
        let mut failed: Vec<usize> = Vec::new();
        let mut rung: HashMap<Arc<str>, usize> = HashMap::new();
        let mut deliveries = 0u64;
        let mut next_send = 0;
        for (index, msg) in window.iter().enumerate() {
            let Ok(info) = msg.info() else { continue };
            let seq = info.stream_sequence;
            let decision = decide(
                &self.broker.subjects,
                &self.registry,
                msg.subject.as_str(),
                msg.headers.as_ref(),
                &msg.payload,
            );
            match decision {
                Decision::Deliver {
                    destinations,
                    tenant,
                    event_id,
                    event_type,
                } => {
                    for id in destinations {
                        let shard = self.broker.shard_of(&id);
                        let mut delivery = Pending::new(
                            self.broker.subjects.delivery(shard, &id),
                            delivery_headers(msg, seq, &id),
                            msg.payload.clone(),
                        );
                        delivery.delivery = Some((index, id.clone(), tenant.clone()));
                        pending.push(delivery);
                        *rung.entry(id).or_default() += 1;
                        deliveries += 1;
                    }
                    // The event's lookup record, as ingest writes it: an event published
                    // straight on NATS (or from a file) is found by id as soon as it is
                    // routed. The HTTP API writes its own (`Hs-Recorded`).
                    let recorded = msg
                        .headers
                        .as_ref()
                        .is_some_and(|hs| hs.get(h::name::RECORDED).is_some());
                    let record = AcceptedRecord {
                        tenant,
                        seq,
                        event_type,
                    };
                    if !recorded && let Ok(event_id) = crate::model::EventId::parse(event_id) {
                        pending.push(Pending::new(
                            names::idempotency_subject(&names::idempotency_key(&event_id)),
                            HeaderMap::new(),
                            serde_json::to_vec(&record)
                                .expect("record serialises")
                                .into(),
                        ));
                    }
                }
                Decision::DeadLetter {
                    destinations,
                    reason,
                    why,
                } => {
                    for (id, tenant) in destinations {
                        if !self.dead_letter(msg, seq, &id, &tenant, reason, &why).await {
                            return false;
                        }
                    }
                }
                Decision::Nobody => {}
            }
            // Send what this event added, keeping at most IN_FLIGHT PubAcks outstanding.
            for i in next_send..pending.len() {
                if in_flight.len() >= IN_FLIGHT
                    && let Some(oldest) = in_flight.pop_front()
                {
                    self.settle(&mut pending[oldest], oldest, &mut failed).await;
                }
                self.send(&mut pending[i], &window).await;
                if pending[i].ack.is_some() {
                    in_flight.push_back(i);
                } else {
                    failed.push(i);
                }
            }
            next_send = pending.len();
        }
        let settling = async {
            while let Some(i) = in_flight.pop_front() {
                self.settle(&mut pending[i], i, &mut failed).await;
            }
        };
        keep_alive(&window, settling).await;
        // What failed is sent again, one at a time, until it is stored: the window's
        // events stay unacked (and kept alive) meanwhile. Same ids: no duplicates.
        failed.sort_unstable();
        for i in failed {
            loop {
                if pending[i].backlog_full {
                    // Its destination is at its backlog limit: the delivery goes to the
                    // DLQ (replayable), so that one destination's backlog never stops
                    // routing for the others.
                    let (index, id, tenant) = pending[i].delivery.clone().expect("a delivery");
                    let msg = &window[index];
                    let seq = msg.info().map_or(0, |info| info.stream_sequence);
                    warn!(destination_id = %id, seq, "destination at its backlog limit (events.delivery_max_per_destination); delivery dead-lettered");
                    metrics::counter!(m::DELIVERIES_REFUSED_BACKLOG_FULL).increment(1);
                    let why = "the destination's backlog is at events.delivery_max_per_destination";
                    if !self
                        .dead_letter(msg, seq, &id, &tenant, DlqReason::BacklogFull, why)
                        .await
                    {
                        return false;
                    }
                    if let Some(count) = rung.get_mut(&id) {
                        *count = count.saturating_sub(1);
                    }
                    break;
                }
                self.send(&mut pending[i], &window).await;
                if let Some(ack) = pending[i].ack.take() {
                    match ack.await {
                        Ok(_) => break,
                        Err(e) => {
                            let e = BrokerError::new("storing a delivery", e);
                            pending[i].backlog_full =
                                pending[i].delivery.is_some() && is_backlog_full(&e);
                            warn!(subject = %pending[i].subject, error = %e, "delivery not stored; retrying")
                        }
                    }
                }
                for msg in &window {
                    let _ = msg.ack_with(AckKind::Progress).await;
                }
                if !self.pause(Duration::from_secs(1)).await {
                    return false;
                }
            }
        }
        if let Some(last) = window.last() {
            self.ack_through(last, held).await;
        }
        metrics::counter!(m::EVENTS_ROUTED).increment(window.len() as u64);
        metrics::counter!(m::DELIVERIES_ROUTED).increment(deliveries);
        let bell: Vec<(Arc<str>, usize)> = rung.into_iter().collect();
        if let Err(e) = doorbell::ring(&self.broker.client, &self.doorbell, &bell).await {
            // The workers' shard scan finds the deliveries instead.
            warn!(error = %e, "doorbell not rung");
        }
        true
    }

    async fn send(&self, p: &mut Pending, window: &[Message]) {
        let headers = p.headers.take().unwrap_or_else(|| match &p.delivery {
            Some((index, id, _)) => {
                let msg = &window[*index];
                let seq = msg.info().map_or(0, |info| info.stream_sequence);
                delivery_headers(msg, seq, id)
            }
            None => HeaderMap::new(),
        });
        match self
            .broker
            .js
            .publish_with_headers(p.subject.clone(), headers, p.payload.clone())
            .await
        {
            Ok(ack) => p.ack = Some(ack),
            Err(e) => {
                warn!(subject = %p.subject, error = %e, "delivery not sent");
                p.ack = None;
            }
        }
    }

    async fn settle(&self, p: &mut Pending, i: usize, failed: &mut Vec<usize>) {
        if let Some(ack) = p.ack.take()
            && let Err(e) = ack.await
        {
            let e = BrokerError::new("storing a delivery", e);
            debug!(subject = %p.subject, error = %e, "delivery not acked");
            p.backlog_full = p.delivery.is_some() && is_backlog_full(&e);
            failed.push(i);
        }
    }

    /// Stores a dead letter of `msg` for one destination before the event is acked,
    /// retrying until it is stored (rare: a message that cannot be delivered as it
    /// stands, or a destination at its backlog limit). Answers false when cancelled.
    async fn dead_letter(
        &self,
        msg: &Message,
        seq: u64,
        id: &str,
        tenant: &str,
        reason: DlqReason,
        why: &str,
    ) -> bool {
        let letter = DeadLetter::unattempted(tenant, id, reason, msg, seq, why);
        let event_id = serde_json::from_slice::<serde_json::Value>(&msg.payload)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string));
        while let Err(e) = dead_letter::store(
            &self.broker,
            &self.stats,
            event_id.as_deref(),
            letter.clone(),
        )
        .await
        {
            warn!(destination_id = %id, seq, error = %e, "dead letter not stored; retrying");
            if !self.pause(Duration::from_secs(1)).await {
                return false;
            }
        }
        true
    }

    /// Waits until the registry holds every destination write the bucket holds now (a
    /// destination written before an event was published is routed that event).
    async fn wait_for_fresh_registry(&self) {
        let last = match self.broker.destinations.status().await {
            Ok(status) => status.info.state.last_sequence,
            Err(e) => {
                warn!(error = %e, "destinations bucket not read; routing with the registry as it is");
                return;
            }
        };
        let deadline = tokio::time::Instant::now() + FRESHNESS_PATIENCE;
        while self.registry.watched() < last {
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    watched = self.registry.watched(),
                    last, "destination watch is behind; routing with the registry as it is"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Sleeps unless cancelled; answers whether to go on.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.token.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// The headers of a delivery message: the event's own, its id on the shard (so that a
/// window routed again is de-duplicated) and the event's `HS_EVENTS` sequence.
fn delivery_headers(msg: &Message, seq: u64, destination: &str) -> HeaderMap {
    let mut headers = msg.headers.clone().unwrap_or_default();
    headers.insert(
        h::name::MSG_ID,
        names::delivery_msg_id(seq, destination).as_str(),
    );
    headers.insert(h::name::EVENT_SEQ, seq.to_string().as_str());
    headers
}

/// Runs `work`, telling the server every few seconds that the window's events are still
/// being routed, so that a slow window is not handed to another replica meanwhile.
async fn keep_alive<T>(window: &[Message], work: impl Future<Output = T>) -> T {
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tokio::time::sleep(ROUTER_ACK_WAIT / 3) => {
                for msg in window {
                    let _ = msg.ack_with(AckKind::Progress).await;
                }
            }
        }
    }
}
