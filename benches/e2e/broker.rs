//! The broker's own limit for hookstream's layout: a backlog spread over many filtered
//! durable consumers (one per destination), drained by no-wait pulls whose answers all
//! come to one wildcard subscription, acked at once, no HTTP. What the delivery drain of
//! the same shape can reach at best on this machine.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::harness::{Nats, proc_stats};
use crate::scenarios::preload_stream;

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
                    format!("$JS.API.CONSUMER.MSG.NEXT.HS_EVENTS.dest_d{i}"),
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
            return json!({ "consumers": consumers, "filters": filters, "error": format!("stalled at {done} of {total}") });
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
    let secs = started.elapsed().as_secs_f64();
    let (_, ncpu1) = proc_stats(nats.pid());
    json!({
        "consumers": consumers, "filters": filters, "events": total,
        "per_second": total as f64 / secs,
        "pulls": pulls, "empty_pulls": empty_pulls,
        "nats_cpu_s_per_100k": (ncpu1 - ncpu0) * 100_000.0 / total as f64,
    })
}
