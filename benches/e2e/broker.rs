//! The broker's own limit for hookstream's layouts, with no hookstream in the way: a
//! backlog spread over many filtered durable consumers (one per destination), drained by
//! no-wait pulls whose answers all come to one wildcard subscription, acked at once, no
//! HTTP. What a delivery drain of the same shape can reach at best on this machine.
//!
//! - `raw_fanout`: the old layout, consumers on `HS_EVENTS` with one or two filters.
//! - `shard_fanout`: the routed layout (ADR 0010), consumers with one literal filter on
//!   `HS_DLV_<k>` WorkQueue shards.
//! - `ack_cost`: one busy consumer on a WorkQueue shard beside many idle ones (nats-server
//!   loops over a WorkQueue stream's consumers on every ack).
//! - `levers`: what each way of writing the router's copy costs nats-server (shard
//!   publishes, router acks, lookup records).
//! - `floor`: the NATS messages of one delivery in each layout, by a client doing nothing
//!   else: what a delivery costs the broker at least.

pub mod fast_batch;
pub mod floor;
pub mod levers;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::harness::{Nats, proc_stats};
use crate::scenarios::{envelope, preload_stream};

/// Pull requests outstanding at once, over all consumers.
const PULLS_IN_FLIGHT: usize = 64;

/// `filters`: 1 = the event-type filter only; 2 = plus `hs.to.<id>.>` (the contract's).
pub async fn raw_fanout(consumers: usize, total: usize, filters: usize) -> Value {
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(stream::Config {
            name: "HS_EVENTS".into(),
            subjects: vec!["hs.ev.>".into(), "hs.to.>".into()],
            max_consumers: (consumers as i32 + 10),
            ..Default::default()
        })
        .await
        .expect("stream");
    futures::stream::iter(0..consumers)
        .map(|i| {
            let stream = stream.clone();
            async move {
                let mut subjects = vec![format!("hs.ev.default.bench.d{i}")];
                if filters > 1 {
                    subjects.push(format!("hs.to.d{i}.>"));
                }
                stream
                    .create_consumer(pull::Config {
                        durable_name: Some(format!("dest_d{i}")),
                        filter_subjects: subjects,
                        max_ack_pending: 32,
                        ..Default::default()
                    })
                    .await
                    .expect("consumer");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    preload_stream(&js, total, consumers).await;
    let targets = (0..consumers).map(|_| "HS_EVENTS".to_string()).collect();
    let mut out = drain(&nats, &client, targets, total).await;
    out["filters"] = json!(filters);
    out
}

/// FNV-1a (32 bit), the shard function of the contract.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Creates `shards` WorkQueue streams `HS_DLV_<k>` and `consumers` durables `dest_d<i>`,
/// each with the one literal filter `hs.dlv.<k>.d<i>`; answers each consumer's stream.
async fn shard_layout(js: &jetstream::Context, consumers: usize, shards: usize) -> Vec<String> {
    for k in 0..shards {
        js.create_stream(stream::Config {
            name: format!("HS_DLV_{k}"),
            subjects: vec![format!("hs.dlv.{k}.>")],
            retention: stream::RetentionPolicy::WorkQueue,
            max_consumers: consumers as i32 + 10,
            ..Default::default()
        })
        .await
        .expect("shard");
    }
    let shard_of = |i: usize| fnv1a(format!("d{i}").as_bytes()) as usize % shards;
    futures::stream::iter(0..consumers)
        .map(|i| {
            let js = js.clone();
            async move {
                let k = shard_of(i);
                js.get_stream_no_info(format!("HS_DLV_{k}"))
                    .await
                    .expect("shard")
                    .create_consumer(pull::Config {
                        durable_name: Some(format!("dest_d{i}")),
                        filter_subject: format!("hs.dlv.{k}.d{i}"),
                        max_ack_pending: 32,
                        ..Default::default()
                    })
                    .await
                    .expect("consumer");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    (0..consumers)
        .map(|i| format!("HS_DLV_{}", shard_of(i)))
        .collect()
}

/// Publishes `total` deliveries, delivery `n` for consumer `n % targets.len()` (so the
/// backlogs interleave as a router's output would), 256 PubAcks in flight.
async fn preload_deliveries(js: &jetstream::Context, targets: &[String], total: usize) {
    let mut acks = futures::stream::FuturesUnordered::new();
    for n in 0..total {
        let i = n % targets.len();
        let k = targets[i].trim_start_matches("HS_DLV_");
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{n}.d{i}").as_str());
        headers.insert("Hs-Event-Seq", n.to_string().as_str());
        let ack = js
            .publish_with_headers(
                format!("hs.dlv.{k}.d{i}"),
                headers,
                envelope(n, &format!("bench.d{i}")).into(),
            )
            .await
            .expect("publish");
        acks.push(ack.into_future());
        if acks.len() >= 256 {
            acks.next().await.expect("ack").expect("acked");
        }
    }
    while let Some(a) = acks.next().await {
        a.expect("acked");
    }
}

/// The routed layout: `consumers` single-literal-filter durables over `shards` WorkQueue
/// shards, `total` deliveries spread evenly. Also reports the bytes the shards store per
/// delivery and the time until every ack has removed its message.
pub async fn shard_fanout(consumers: usize, shards: usize, total: usize) -> Value {
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    let targets = shard_layout(&js, consumers, shards).await;
    preload_deliveries(&js, &targets, total).await;
    let mut stored = 0u64;
    for k in 0..shards {
        let mut s = js.get_stream(format!("HS_DLV_{k}")).await.expect("shard");
        stored += s.info().await.expect("info").state.bytes;
    }
    let mut out = drain(&nats, &client, targets, total).await;
    out["shards"] = json!(shards);
    out["bytes_stored_per_delivery"] = json!(stored as f64 / total as f64);
    out
}

/// One consumer busy with `total` deliveries on one WorkQueue shard that also holds
/// `idle` other consumers: the rate of pull + ack, counted until the shard is empty (the
/// acks' own cost included).
pub async fn ack_cost(idle: usize, total: usize) -> Value {
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    let created = Instant::now();
    let mut targets = shard_layout(&js, idle + 1, 1).await;
    let create_secs = created.elapsed().as_secs_f64();
    targets.truncate(1);
    preload_deliveries(&js, &targets, total).await;
    let started = Instant::now();
    let mut out = drain(&nats, &client, targets, total).await;
    let mut shard = js.get_stream("HS_DLV_0").await.expect("shard");
    let deadline = Instant::now() + Duration::from_secs(60);
    while shard.info().await.expect("info").state.messages > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out["idle_consumers"] = json!(idle);
    out["acked_per_second"] = json!(total as f64 / started.elapsed().as_secs_f64());
    out["consumers_created_per_second"] = json!((idle + 1) as f64 / create_secs);
    out
}

/// Drains `total` messages from consumers `dest_d<i>` on stream `targets[i]` (an even
/// share each): `PULLS_IN_FLIGHT` no-wait pulls open, round robin over the consumers
/// with work, every answer on one subscription, each message acked at once.
async fn drain(
    nats: &Nats,
    client: &async_nats::Client,
    targets: Vec<String>,
    total: usize,
) -> Value {
    let consumers = targets.len();
    let (_, ncpu0) = proc_stats(nats.pid());
    let started = Instant::now();
    let mut replies = client.subscribe("_INBOX.fan.>").await.expect("subscribe");
    // Left per consumer, and which consumers have a pull outstanding.
    let mut left: Vec<usize> = (0..consumers)
        .map(|i| total / consumers + usize::from(i < total % consumers))
        .collect();
    let mut open: HashMap<usize, usize> = HashMap::new();
    let mut next = 0usize;
    let mut done = 0usize;
    let mut empty_pulls = 0usize;
    let mut pulls = 0usize;
    while done < total {
        // Keep PULLS_IN_FLIGHT pulls open, round robin over consumers with work.
        let mut scanned = 0;
        while open.len() < PULLS_IN_FLIGHT && scanned < consumers {
            let i = next;
            next = (next + 1) % consumers;
            scanned += 1;
            if left[i] == 0 || open.contains_key(&i) {
                continue;
            }
            let batch = left[i].min(256);
            open.insert(i, batch);
            pulls += 1;
            client
                .publish_with_reply(
                    format!("$JS.API.CONSUMER.MSG.NEXT.{}.dest_d{i}", targets[i]),
                    format!("_INBOX.fan.{i}"),
                    json!({ "batch": batch, "no_wait": true })
                        .to_string()
                        .into(),
                )
                .await
                .expect("pull");
        }
        let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(30), replies.next()).await
        else {
            return json!({ "consumers": consumers, "error": format!("stalled at {done} of {total}") });
        };
        // Messages keep their stream subject; the ack subject names the consumer. Status
        // answers come on the reply inbox itself.
        let i: usize = match msg.reply.as_deref() {
            Some(ack) => ack.split('.').nth(3).and_then(|c| c.strip_prefix("dest_d")),
            None => msg.subject.rsplit('.').next(),
        }
        .and_then(|s| s.parse().ok())
        .expect("consumer index");
        if msg.status.is_some_and(|s| s.as_u16() >= 400) {
            if msg.status.is_some_and(|s| s.as_u16() == 404) {
                empty_pulls += 1;
            }
            open.remove(&i);
            continue;
        }
        if let Some(reply) = msg.reply.clone() {
            client.publish(reply, "".into()).await.expect("ack");
        }
        done += 1;
        left[i] -= 1;
        if let Some(wanted) = open.get_mut(&i) {
            *wanted -= 1;
            if *wanted == 0 {
                open.remove(&i);
            }
        }
    }
    client.flush().await.expect("flush");
    let secs = started.elapsed().as_secs_f64();
    let (_, ncpu1) = proc_stats(nats.pid());
    json!({
        "consumers": consumers, "events": total,
        "per_second": total as f64 / secs,
        "pulls": pulls, "empty_pulls": empty_pulls,
        "nats_cpu_s_per_100k": (ncpu1 - ncpu0) * 100_000.0 / total as f64,
    })
}
