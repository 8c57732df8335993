//! The router alone (docs/adr/0010): events already on `HS_EVENTS`, each matching
//! `fanout` destinations that are paused (so their deliveries are routed and wait in
//! their shards, and nothing is sent); a worker starts and routes the backlog. The rate
//! is counted on the router consumer's ack floor, from the first acked event to the last.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::{Value, json};

use crate::harness::{Nats, Service, proc_stats};
use crate::scenarios::{create_destinations, preload};

pub async fn route(fanout: usize, events: usize) -> Value {
    let nats = Nats::start();
    let api = Service::start(&nats.url(), "api", &[]).await;
    create_destinations(
        &api.base(),
        fanout,
        |i| format!("http://127.0.0.1:9/never/{i}"),
        json!({"event_types": ["bench.d0"]}),
    )
    .await;
    let http = reqwest::Client::new();
    for i in 0..fanout {
        let r = http
            .post(format!("{}/v1/destinations/d{i}/pause", api.base()))
            .send()
            .await
            .expect("pause");
        assert!(r.status().is_success(), "pause d{i}: {}", r.status());
    }
    // Every event is of type bench.d0: each goes to all `fanout` destinations.
    preload(&nats.url(), events, 1).await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    let stream = js.get_stream("HS_EVENTS").await.expect("HS_EVENTS");
    let last = stream.get_info().await.expect("info").state.last_sequence;
    let worker = Service::spawn(&nats.url(), "worker", &[]);
    let (_, cpu0) = proc_stats(worker.pid());
    let (_, ncpu0) = proc_stats(nats.pid());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut first: Option<(Instant, u64)> = None;
    let mut floor = 0;
    while floor < last && Instant::now() < deadline {
        if let Some(info) = router_info(&stream).await {
            floor = info.ack_floor.stream_sequence;
            if floor > 0 && first.is_none() {
                first = Some((Instant::now(), floor));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end = Instant::now();
    let (rss, cpu1) = proc_stats(worker.pid());
    let (_, ncpu1) = proc_stats(nats.pid());
    let Some((start, at_start)) = first else {
        return json!({"fanout": fanout, "error": "nothing routed"});
    };
    let routed = floor.saturating_sub(at_start) as f64;
    let secs = (end - start).as_secs_f64().max(1e-3);
    json!({
        "fanout": fanout, "events": events, "complete": floor >= last,
        "events_per_second": routed / secs,
        "deliveries_per_second": routed * fanout as f64 / secs,
        "worker_cpu_s_per_100k_events": (cpu1 - cpu0) * 100_000.0 / events as f64,
        "nats_cpu_s_per_100k_events": (ncpu1 - ncpu0) * 100_000.0 / events as f64,
        "worker_rss_mib": rss as f64 / 1048576.0,
    })
}

/// The router consumer's state: `hs_router_all` (ADR 0019), or `hs_router` for a binary
/// from before it (`HOOKSTREAM_BENCH_BIN`).
pub async fn router_info(
    stream: &async_nats::jetstream::stream::Stream,
) -> Option<async_nats::jetstream::consumer::Info> {
    for name in ["hs_router_all", "hs_router"] {
        if let Ok(info) = stream.consumer_info(name).await {
            return Some(info);
        }
    }
    None
}
