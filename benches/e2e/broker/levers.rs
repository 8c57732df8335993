//! Levers for the routed layout's copy, broker alone (docs/PERFORMANCE.md, "Levers for
//! the copy"): what nats-server spends per message on each way of writing a delivery to
//! its shard, of acking the router's events and of writing an event's lookup record.
//!
//! - `shard_publish`: deliveries as the router sends them (`Nats-Msg-Id`, the event's
//!   headers, a ~600 B envelope) to a WorkQueue file stream, by pipelined publishes
//!   awaiting each PubAck, by JetStream fast batches (ADR-50 of nats-architecture-and-design,
//!   nats-server 2.14+, sent by hand in `fast_batch.rs`), or by core
//!   publishes without a reply subject (no PubAck: the lower bound).
//! - `router_acks`: the router's consumer acking every event (ack policy explicit) or the
//!   last of each batch (ack policy all).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use super::fast_batch::{FAST_PREFIX, fast_batch};
use crate::harness::{Nats, proc_stats};
use crate::scenarios::{envelope, preload_stream};

/// The router's PubAcks in flight at most (`router::IN_FLIGHT`).
const IN_FLIGHT: usize = 4_096;

/// How a lever writes its messages.
#[derive(Clone, Copy)]
pub enum Write {
    /// `publish` with a reply inbox, at most `IN_FLIGHT` PubAcks outstanding (the router).
    PubAcked,
    /// Fast batches of this many messages, one after the other, gap mode `fail`.
    FastBatch(usize),
    /// Core publishes without a reply subject: no PubAck at all.
    Core,
}

impl Write {
    /// The scenario name's tail: `pubacked`, `fast_batch_<n>`, `core`.
    pub fn label(self) -> String {
        match self {
            Write::PubAcked => "pubacked".into(),
            Write::FastBatch(n) => format!("fast_batch_{n}"),
            Write::Core => "core".into(),
        }
    }
}

/// One message as the router writes it.
pub(super) struct Out {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

/// Delivery `n` for destination `d<n % dests>` on shard 0, with the headers the router
/// gives it (the event's own, its id on the shard, its `HS_EVENTS` sequence).
pub(super) fn delivery(n: usize, dests: usize) -> Out {
    let d = n % dests;
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{}.d{d}", n + 1).as_str());
    headers.insert("Hs-Tenant", "default");
    headers.insert("Hs-Event-Type", format!("bench.d{d}").as_str());
    headers.insert("Hs-Event-Seq", (n + 1).to_string().as_str());
    Out {
        subject: format!("hs.dlv.0.d{d}"),
        headers,
        payload: envelope(n, &format!("bench.d{d}")).into(),
    }
}

/// An event's lookup record in `hs_idempotency`, as the router writes it for an event
/// published on NATS (one key per event, a small JSON value).
fn lookup_record(n: usize) -> Out {
    Out {
        subject: format!("$KV.hs_idempotency.ev_01JBENCH{n:016}"),
        headers: HeaderMap::new(),
        payload: json!({"tenant": "default", "seq": n + 1, "event_type": "bench.d0"})
            .to_string()
            .into(),
    }
}

/// `HS_EVENTS` as `broker/setup.rs` makes it (full means full, duplicate window 120 s).
pub(super) fn events_config() -> stream::Config {
    stream::Config {
        name: "HS_EVENTS".into(),
        subjects: vec!["hs.ev.>".into(), "hs.to.>".into()],
        discard: stream::DiscardPolicy::New,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    }
}

/// The `hs_idempotency` bucket's stream as async-nats makes it, fast batches allowed.
pub(super) fn idempotency_config() -> stream::Config {
    stream::Config {
        name: "KV_hs_idempotency".into(),
        subjects: vec!["$KV.hs_idempotency.>".into()],
        max_messages_per_subject: 1,
        discard: stream::DiscardPolicy::New,
        allow_direct: true,
        allow_rollup: true,
        deny_delete: true,
        allow_batch_publish: true,
        ..Default::default()
    }
}

/// The shard as `broker/setup.rs` makes it, fast batches allowed.
pub(super) fn shard_config() -> stream::Config {
    stream::Config {
        name: "HS_DLV_0".into(),
        subjects: vec!["hs.dlv.0.>".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        duplicate_window: Duration::from_secs(120),
        allow_batch_publish: true,
        ..Default::default()
    }
}

/// Lever 1: `total` deliveries to one WorkQueue shard, written as `how`.
pub async fn shard_publish(how: Write, total: usize) -> Value {
    let msgs: Vec<Out> = (0..total).map(|n| delivery(n, 1)).collect();
    let mut out = publish_run(shard_config(), &msgs, how).await;
    out["write"] = json!(how.label());
    out["payload_bytes"] = json!(msgs[0].payload.len());
    out
}

/// Lever 3: `total` lookup records to the `hs_idempotency` bucket's stream, written as `how`.
pub async fn kv_record(how: Write, total: usize) -> Value {
    let msgs: Vec<Out> = (0..total).map(lookup_record).collect();
    let mut out = publish_run(idempotency_config(), &msgs, how).await;
    out["write"] = json!(how.label());
    out
}

/// Writes `msgs` into a fresh stream `cfg` and reports nats-server's CPU per 100k
/// messages and the rate, counted until every message is stored (for core publishes: until
/// the stream holds them all).
async fn publish_run(cfg: stream::Config, msgs: &[Out], how: Write) -> Value {
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    let mut stream = js.create_stream(cfg).await.expect("stream");
    let mut replies = client
        .subscribe(format!("{FAST_PREFIX}.>"))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let (_, ncpu0) = proc_stats(nats.pid());
    let started = Instant::now();
    let mut extra = json!({});
    match how {
        Write::PubAcked => pubacked(&js, msgs).await,
        Write::FastBatch(size) => {
            let mut flow_acks = 0;
            for (b, chunk) in msgs.chunks(size).enumerate() {
                let outcome =
                    fast_batch(&client, &mut replies, &format!("b{b}"), chunk, 500, "fail").await;
                assert!(
                    outcome.pub_ack.get("error").is_none(),
                    "batch refused: {}",
                    outcome.pub_ack
                );
                flow_acks += outcome.flow_acks;
            }
            extra["flow_acks"] = json!(flow_acks);
        }
        Write::Core => {
            for m in msgs {
                client
                    .publish_with_headers(m.subject.clone(), m.headers.clone(), m.payload.clone())
                    .await
                    .expect("publish");
            }
            client.flush().await.expect("flush");
        }
    }
    // Every write stored (for core publishes the only sign of it).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stored = 0;
    while Instant::now() < deadline {
        stored = stream.info().await.expect("info").state.messages;
        if stored >= msgs.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let (_, ncpu1) = proc_stats(nats.pid());
    let mut out = json!({
        "messages": msgs.len(), "stored": stored,
        "per_second": msgs.len() as f64 / secs,
        "nats_cpu_s_per_100k": (ncpu1 - ncpu0) * 100_000.0 / msgs.len() as f64,
    });
    if let (Some(out), Some(extra)) = (out.as_object_mut(), extra.as_object()) {
        out.extend(extra.clone());
    }
    out
}

/// Pipelined publishes as the router sends them: each PubAck awaited, the oldest first
/// once `IN_FLIGHT` are outstanding.
async fn pubacked(js: &jetstream::Context, msgs: &[Out]) {
    let mut in_flight: VecDeque<jetstream::context::PublishAckFuture> = VecDeque::new();
    for m in msgs {
        if in_flight.len() >= IN_FLIGHT
            && let Some(oldest) = in_flight.pop_front()
        {
            oldest.await.expect("stored");
        }
        let ack = js
            .publish_with_headers(m.subject.clone(), m.headers.clone(), m.payload.clone())
            .await
            .expect("publish");
        in_flight.push_back(ack);
    }
    for ack in in_flight {
        ack.await.expect("stored");
    }
}

/// Lever 2: a pull consumer reads `total` events in batches of up to 1,000 and acks each
/// (ack policy explicit, the router today) or the last of each batch (ack policy all).
pub async fn router_acks(ack_all: bool, total: usize) -> Value {
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    let events = js.create_stream(events_config()).await.expect("stream");
    preload_stream(&js, total, 1).await;
    let router = events
        .create_consumer(consumer::pull::Config {
            durable_name: Some("hs_router".into()),
            ack_policy: if ack_all {
                consumer::AckPolicy::All
            } else {
                consumer::AckPolicy::Explicit
            },
            ack_wait: Duration::from_secs(6),
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let (_, ncpu0) = proc_stats(nats.pid());
    let started = Instant::now();
    let mut read = 0;
    let mut batches = 0;
    while read < total {
        let mut batch = router
            .fetch()
            .max_messages(1_000)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .expect("fetch");
        let mut last = None;
        while let Some(msg) = batch.next().await {
            let msg = msg.expect("message");
            read += 1;
            if ack_all {
                last = Some(msg);
            } else {
                msg.ack().await.expect("ack");
            }
        }
        if let Some(msg) = last {
            msg.ack().await.expect("ack");
        }
        batches += 1;
    }
    client.flush().await.expect("flush");
    // Counted until the server holds every ack.
    let mut router = router;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let info = router.info().await.expect("info");
        if info.ack_floor.stream_sequence >= total as u64 && info.num_ack_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let (_, ncpu1) = proc_stats(nats.pid());
    json!({
        "ack_policy": if ack_all { "all" } else { "explicit" },
        "events": total, "fetches": batches,
        "per_second": total as f64 / secs,
        "nats_cpu_s_per_100k": (ncpu1 - ncpu0) * 100_000.0 / total as f64,
    })
}
