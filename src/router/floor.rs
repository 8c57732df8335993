//! What the router has pulled and may route now (docs/adr/0019).
//!
//! `hs_router_all` acks with policy *all*: one ack of event N settles every event up to N
//! on the server. So the router routes, and acks, only a run of events that continues
//! from its **floor** (every event at or below it is routed and acked, or gone from
//! `HS_EVENTS`). Events above a gap wait here: the gap is events another router pulled
//! and never acked (it died, or lost the pin), which come back to this one after the
//! router's ack wait; routing past them would break every destination's order, and
//! acking past them would drop them. A gap that nobody holds (deleted events, or events
//! another router has acked since) is found by [`settle_gap`] and closed.

use std::collections::BTreeMap;

use async_nats::jetstream::Message;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use tracing::warn;

use crate::broker::names;

#[derive(Default)]
pub struct Held {
    floor: u64,
    waiting: BTreeMap<u64, Message>,
    /// The delivery (consumer) sequence of the last ack: the server ignores an ack-all
    /// whose delivery sequence is not above it.
    acked_delivery: u64,
}

/// Where a pulled message goes.
pub enum Taken {
    /// Held until it can be routed.
    Held,
    /// At or below the floor: routed already, its ack lost; ack it again.
    Settled(Box<Message>),
}

impl Held {
    /// Starts at the consumer's ack floor.
    pub fn new(floor: u64) -> Self {
        Self {
            floor,
            ..Self::default()
        }
    }

    pub fn take(&mut self, msg: Message) -> Taken {
        let Ok(seq) = msg.info().map(|info| info.stream_sequence) else {
            // Not a JetStream message: nothing to route or ack.
            return Taken::Held;
        };
        if seq <= self.floor {
            return Taken::Settled(Box::new(msg));
        }
        // A second copy (redelivered while held) replaces the first: its ack is current.
        self.waiting.insert(seq, msg);
        Taken::Held
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// The held events that continue from the floor, in order, at most `max`. The floor
    /// moves only when they are routed ([`Held::routed`]).
    pub fn run(&mut self, max: usize) -> Vec<Message> {
        let mut run = Vec::new();
        let mut next = self.floor + 1;
        while run.len() < max {
            match self.waiting.first_key_value() {
                Some((&seq, _)) if seq == next => {
                    run.push(self.waiting.pop_first().expect("first").1);
                    next += 1;
                }
                _ => break,
            }
        }
        run
    }

    /// The first `max` held events, gap or not: for when nobody else holds an event.
    pub fn all(&mut self, max: usize) -> Vec<Message> {
        let mut run = Vec::new();
        while run.len() < max {
            match self.waiting.pop_first() {
                Some((_, msg)) => run.push(msg),
                None => break,
            }
        }
        run
    }

    /// The gap below the held events: from the first missing sequence to the first held.
    pub fn gap(&self) -> Option<(u64, u64)> {
        let (&first, _) = self.waiting.first_key_value()?;
        (first > self.floor + 1).then_some((self.floor + 1, first))
    }

    /// Everything up to `seq` is settled (acked, or gone from the stream).
    pub fn raise_floor(&mut self, seq: u64) {
        self.floor = self.floor.max(seq);
    }

    /// A run was routed and acked up to its last event.
    pub fn routed(&mut self, last_seq: u64) {
        self.raise_floor(last_seq);
    }

    /// Whether an ack-all of the message with this delivery sequence counts; remembers
    /// it when it does.
    pub fn ack_counts(&mut self, delivery_seq: u64) -> bool {
        if delivery_seq > self.acked_delivery {
            self.acked_delivery = delivery_seq;
            true
        } else {
            false
        }
    }

    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.waiting.values()
    }
}

/// What a look at the gap below the held events found.
pub enum Gap {
    /// Settled: the held events continue from the floor.
    Closed,
    /// Events in it are held by another router.
    Open,
    /// Events are stored in it, but no router holds one unacked: none can come back.
    NobodyElseHolds,
}

/// Closes the gap below the held events as far as it is settled: acked on the
/// consumer (a router that lost the pin may still ack its own window), or no event
/// stored there (deleted, expired). What is left is held by another router and comes
/// back to this one after the router's ack wait.
pub async fn settle_gap(events: &Stream, held: &mut Held) -> Gap {
    let info = match events.consumer_info(names::ROUTER_CONSUMER).await {
        Ok(info) => info,
        Err(e) => {
            warn!(error = %e, "router consumer not read; events wait above a gap");
            return Gap::Open;
        }
    };
    held.raise_floor(info.ack_floor.stream_sequence);
    // Every unacked event is one this router holds: nothing below them can come back.
    let nobody_else = info.num_ack_pending == held.len();
    let Some((from, first)) = held.gap() else {
        return Gap::Closed;
    };
    // A replica answering a direct get that stores `first` stores everything before it
    // (replicas apply the stream in order): the next event it has at or after `from`
    // is the first one that exists there.
    match events.direct_get_next_for_subject(">", Some(from)).await {
        Ok(next) if next.sequence >= first => {
            held.raise_floor(first - 1);
            return Gap::Closed;
        }
        Ok(next) => held.raise_floor(next.sequence - 1),
        // Not even `first`: a replica behind the leader; it proves nothing.
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => {}
        Err(e) => warn!(error = %e, "events stream not read; events wait above a gap"),
    }
    if nobody_else {
        Gap::NobodyElseHolds
    } else {
        Gap::Open
    }
}
