//! What one delivery costs the broker at least (docs/PERFORMANCE.md, "The broker's floor
//! per delivery"): the NATS messages a delivery to one destination needs, sent by a client
//! that does nothing else (no HTTP, no matching, no signing, no spans), so that
//! nats-server's CPU, and the client's, are what those messages alone cost.
//!
//! - `routed`: the router pulls the events (1,000 at a time, one ack-all each, as
//!   `hs_router_all`), publishes each delivery to the shard with the router's headers
//!   (PubAcks pipelined); the destination's consumer (one literal filter, explicit acks,
//!   the worker's pull batch of 64 and 32 in flight) takes each delivery, publishes its
//!   attempt record (core publish, as for a delivered attempt) and acks it (the WorkQueue
//!   removes it). Router and consumer run at once on one connection, as in a worker.
//!   `record`: the router also writes the event's lookup record (an event published on
//!   NATS; the HTTP API writes its own).
//! - `old`: the layout before routing: the destination's consumer on `HS_EVENTS` with its
//!   filter, the attempt record and the ack.
//!
//! `ingest_floor` does the same for an event accepted over HTTP: its publish and its
//! lookup record, each PubAck awaited.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use super::levers::{events_config, idempotency_config};
use crate::harness::{Nats, proc_stats};
use crate::scenarios::{envelope, preload_stream};

/// The worker's defaults: `delivery.pull_batch`, `default_max_in_flight`.
const PULL_BATCH: usize = 64;
const MAX_IN_FLIGHT: i64 = 32;
/// The router's window and PubAcks in flight (`router::WINDOW`, `router::IN_FLIGHT`).
const WINDOW: usize = 1_000;
const IN_FLIGHT: usize = 4_096;

#[derive(Clone, Copy)]
pub enum Layout {
    Routed { record: bool },
    Old,
}

impl Layout {
    pub fn label(self) -> &'static str {
        match self {
            Layout::Routed { record: false } => "routed",
            Layout::Routed { record: true } => "routed_record",
            Layout::Old => "old",
        }
    }
}

/// `total` events for one destination, delivered (as far as the broker is concerned) in
/// `layout`; nats-server's and this process's CPU per 100k deliveries.
pub async fn delivery_floor(layout: Layout, total: usize) -> Value {
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    let events = js
        .create_stream(events_config())
        .await
        .expect("events stream");
    js.create_stream(stream::Config {
        name: "HS_ATTEMPTS".into(),
        subjects: vec!["hs.att.>".into()],
        discard: stream::DiscardPolicy::Old,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .expect("attempts stream");
    preload_stream(&js, total, 1).await;
    let filter = "hs.ev.default.bench.d0";
    let (_, ncpu0) = proc_stats(nats.pid());
    let (_, cpu0) = proc_stats(std::process::id());
    let started = Instant::now();
    match layout {
        Layout::Old => {
            let dest = events
                .create_consumer(destination_config(filter))
                .await
                .expect("destination consumer");
            deliver(&client, dest, total).await;
        }
        Layout::Routed { record } => {
            let shard = js
                .create_stream(stream::Config {
                    name: "HS_DLV_0".into(),
                    subjects: vec!["hs.dlv.0.>".into()],
                    retention: stream::RetentionPolicy::WorkQueue,
                    discard: stream::DiscardPolicy::New,
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                })
                .await
                .expect("shard");
            if record {
                js.create_stream(idempotency_config())
                    .await
                    .expect("idempotency bucket stream");
            }
            let router = events
                .create_consumer(consumer::pull::Config {
                    durable_name: Some("hs_router_all".into()),
                    ack_policy: consumer::AckPolicy::All,
                    ack_wait: Duration::from_secs(6),
                    max_ack_pending: 20_000,
                    ..Default::default()
                })
                .await
                .expect("router consumer");
            let dest = shard
                .create_consumer(destination_config("hs.dlv.0.d0"))
                .await
                .expect("destination consumer");
            tokio::join!(
                route(&js, router, total, record),
                deliver(&client, dest, total)
            );
        }
    }
    client.flush().await.expect("flush");
    let secs = started.elapsed().as_secs_f64();
    let (_, ncpu1) = proc_stats(nats.pid());
    let (_, cpu1) = proc_stats(std::process::id());
    let per_100k = 100_000.0 / total as f64;
    json!({
        "layout": layout.label(), "deliveries": total,
        "per_second": total as f64 / secs,
        "nats_cpu_s_per_100k": (ncpu1 - ncpu0) * per_100k,
        "client_cpu_s_per_100k": (cpu1 - cpu0) * per_100k,
    })
}

/// What one accepted event costs the broker at least (docs/PERFORMANCE.md, "The broker's
/// floor per accepted event"): `in_flight` producers at once, each publishing an event as
/// the API does (`Nats-Msg-Id` = a drawn id, the API's headers, a ~600 B envelope),
/// awaiting its PubAck, then writing its lookup record to `hs_idempotency` and awaiting
/// that PubAck too. No HTTP, no JSON parse, no spans: nats-server's CPU and the client's
/// are what those two stored messages alone cost.
///
/// `lean`: each publish is a core request (`Client::send_request`, one timer) whose answer
/// is parsed into the one field a PubAck needs, instead of `jetstream::Context::publish`
/// (an ack permit, two timers, a boxed future, an untagged-enum parse).
pub async fn ingest_floor(total: usize, in_flight: usize, lean: bool) -> Value {
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    js.create_stream(events_config())
        .await
        .expect("events stream");
    js.create_stream(idempotency_config())
        .await
        .expect("idempotency bucket stream");
    let accept = |i: usize| {
        let js = js.clone();
        async move {
            let id = format!("evt_{}", ulid::Ulid::new());
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            headers.insert("Hs-Event-Type", "bench.single");
            headers.insert("Hs-Tenant", "default");
            headers.insert("Hs-Recorded", "api");
            let body = Bytes::from(envelope(i, "bench.single"));
            let record_subject = format!("$KV.hs_idempotency.ev.{id}");
            if lean {
                let client = js.client();
                let seq = lean_publish(&client, "hs.ev.default.bench.single", headers, body).await;
                let record = json!({"tenant": "default", "seq": seq, "type": "bench.single"});
                lean_publish(
                    &client,
                    &record_subject,
                    HeaderMap::new(),
                    record.to_string().into(),
                )
                .await;
                return;
            }
            let stored = js
                .publish_with_headers("hs.ev.default.bench.single", headers, body)
                .await
                .expect("publish")
                .await
                .expect("stored");
            let record =
                json!({"tenant": "default", "seq": stored.sequence, "type": "bench.single"});
            js.publish(record_subject, Bytes::from(record.to_string()))
                .await
                .expect("record")
                .await
                .expect("record stored");
        }
    };
    // Warm the connection as the API's would be: not counted.
    futures::stream::iter(0..in_flight * 10)
        .map(accept)
        .buffer_unordered(in_flight)
        .for_each(|_| async {})
        .await;
    let (_, ncpu0) = proc_stats(nats.pid());
    let (_, cpu0) = proc_stats(std::process::id());
    let started = Instant::now();
    futures::stream::iter(0..total)
        .map(accept)
        .buffer_unordered(in_flight)
        .for_each(|_| async {})
        .await;
    let secs = started.elapsed().as_secs_f64();
    let (_, ncpu1) = proc_stats(nats.pid());
    let (_, cpu1) = proc_stats(std::process::id());
    json!({
        "events": total, "in_flight": in_flight, "lean": lean,
        "per_second": total as f64 / secs,
        "nats_cpu_us_per_event": (ncpu1 - ncpu0) * 1e6 / total as f64,
        "client_cpu_us_per_event": (cpu1 - cpu0) * 1e6 / total as f64,
    })
}

/// A JetStream publish as a core request; the stream sequence of its PubAck.
async fn lean_publish(
    client: &async_nats::Client,
    subject: &str,
    headers: HeaderMap,
    payload: Bytes,
) -> u64 {
    #[derive(serde::Deserialize)]
    struct PubAck {
        seq: Option<u64>,
    }
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(payload)
        .timeout(Some(Duration::from_secs(5)));
    let answer = client
        .send_request(subject.to_string(), request)
        .await
        .expect("stored");
    let ack: PubAck = serde_json::from_slice(&answer.payload).expect("a PubAck");
    ack.seq.expect("stored, not refused")
}

/// A destination's consumer as the worker makes it: one filter, explicit acks.
fn destination_config(filter: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some("dest_d0".into()),
        filter_subject: filter.into(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(12),
        max_ack_pending: MAX_IN_FLIGHT,
        ..Default::default()
    }
}

/// The router's messages: each window's deliveries (and records) pipelined, every PubAck
/// awaited, then one ack-all.
async fn route(
    js: &jetstream::Context,
    router: consumer::PullConsumer,
    total: usize,
    record: bool,
) {
    let mut routed = 0;
    let mut in_flight: VecDeque<jetstream::context::PublishAckFuture> = VecDeque::new();
    while routed < total {
        let mut batch = router
            .fetch()
            .max_messages(WINDOW)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .expect("fetch");
        let mut last = None;
        while let Some(msg) = batch.next().await {
            let msg = msg.expect("event");
            let seq = msg.info().expect("info").stream_sequence;
            let mut headers = msg.headers.clone().unwrap_or_else(HeaderMap::new);
            headers.insert("Nats-Msg-Id", format!("{seq}.d0").as_str());
            headers.insert("Hs-Event-Seq", seq.to_string().as_str());
            let mut outgoing = vec![("hs.dlv.0.d0".to_string(), headers, msg.payload.clone())];
            if record {
                let value = json!({"tenant": "default", "seq": seq, "type": "bench.d0"});
                outgoing.push((
                    format!("$KV.hs_idempotency.ev_{seq}"),
                    HeaderMap::new(),
                    Bytes::from(value.to_string()),
                ));
            }
            for (subject, headers, payload) in outgoing {
                if in_flight.len() >= IN_FLIGHT
                    && let Some(oldest) = in_flight.pop_front()
                {
                    oldest.await.expect("stored");
                }
                in_flight.push_back(
                    js.publish_with_headers(subject, headers, payload)
                        .await
                        .expect("publish"),
                );
            }
            routed += 1;
            last = Some(msg);
        }
        while let Some(ack) = in_flight.pop_front() {
            ack.await.expect("stored");
        }
        if let Some(msg) = last {
            msg.ack().await.expect("ack");
        }
    }
}

/// The destination's messages: pulls of 64, then for each delivery its attempt record
/// (core publish) and its ack.
async fn deliver(client: &async_nats::Client, dest: consumer::PullConsumer, total: usize) {
    let mut messages = dest
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .messages()
        .await
        .expect("pull");
    let attempt = Bytes::from(
        json!({"event_id": "e0", "destination_id": "d0", "tenant": "default",
            "attempt": 1, "outcome": "delivered", "status": 200, "duration_ms": 1,
            "at": "2026-01-01T00:00:00Z", "response_body": ""})
        .to_string(),
    );
    for n in 0..total {
        let msg = messages
            .next()
            .await
            .expect("a delivery")
            .expect("delivery");
        client
            .publish(format!("hs.att.default.e{n}.d0"), attempt.clone())
            .await
            .expect("attempt record");
        msg.ack().await.expect("ack");
    }
}
