//! The scenarios. Each returns its figures as JSON; `summarise` turns them into the table.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::harness::{Nats, Receiver, Service, http_client, now_ns, percentiles, proc_stats};

const PAD: usize = 400;

fn pad() -> String {
    "x".repeat(PAD)
}

/// The service's default sweep interval, set explicitly so that the idle window matches.
const SWEEP_INTERVAL: Duration = Duration::from_secs(15);

/// `routed`: this tree's release binary (ADR 0010). `old`: the layout before routing
/// (a consumer per destination on `HS_EVENTS`, ADR 0001), from the binary named by
/// `HOOKSTREAM_BENCH_OLD_BIN`, for the comparison in one run.
fn mode_env(mode: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![(
        "HOOKSTREAM_DELIVERY__SWEEP_INTERVAL_MS",
        SWEEP_INTERVAL.as_millis().to_string(),
    )];
    if mode == "old" {
        env.push(("HOOKSTREAM_DELIVERY__PULL_MODE", "on_demand".into()));
        if let Some(bin) = std::env::var_os("HOOKSTREAM_BENCH_OLD_BIN") {
            env.push((
                crate::harness::BINARY_ENV,
                bin.to_string_lossy().into_owned(),
            ));
        }
    }
    env
}

/// Destinations `0..n`, destination `i` subscribed to `bench.d<i>`, created 64 at a time.
pub async fn create_destinations(
    base: &str,
    n: usize,
    url: impl Fn(usize) -> String,
    extra: Value,
) {
    let client = reqwest::Client::new();
    futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let mut body = json!({
                "id": format!("d{i}"),
                "url": url(i),
                "event_types": [format!("bench.d{i}")],
                "max_in_flight": 64,
                "timeout_ms": 2000,
                "retry": {"schedule_ms": [1000], "max_attempts": 3},
            });
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                for (k, v) in e {
                    b.insert(k.clone(), v.clone());
                }
            }
            let url = format!("{base}/v1/destinations");
            async move {
                let r = client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .expect("create destination");
                assert!(
                    r.status().is_success(),
                    "create destination: {}",
                    r.status()
                );
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
}

pub fn envelope(i: usize, event_type: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": format!("e{i}"), "tenant": "default", "type": event_type,
        "source": null, "occurred_at": null, "received_at": "2026-01-01T00:00:00Z",
        "data": {"t": now_ns(), "i": i, "pad": pad()},
    }))
    .unwrap_or_default()
}

/// Publishes `total` events straight to JetStream, event `i` for destination `i % dests`.
pub async fn preload(nats_url: &str, total: usize, dests: usize) {
    let client = async_nats::connect(nats_url).await.expect("connect");
    preload_stream(&jetstream::new(client), total, dests).await;
}

/// The same, on an existing connection.
pub async fn preload_stream(js: &jetstream::Context, total: usize, dests: usize) {
    preload_events(js, &(0..total).collect::<Vec<_>>(), dests).await;
}

/// Events `indexes`, event `i` for destination `i % dests`, 256 PubAcks in flight.
async fn preload_events(js: &jetstream::Context, indexes: &[usize], dests: usize) {
    let mut acks = futures::stream::FuturesUnordered::new();
    for &i in indexes {
        let event_type = format!("bench.d{}", i % dests);
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("e{i}").as_str());
        let ack = js
            .publish_with_headers(
                format!("hs.ev.default.{event_type}"),
                headers,
                envelope(i, &event_type).into(),
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

/// (1) The HTTP stack the workers use, straight to the receiver: the reference 1.0.
pub async fn raw_http(total: usize, in_flight: usize) -> Value {
    let receiver = Receiver::start().await;
    let client = http_client();
    let body = bytes::Bytes::from(envelope(0, "bench.raw"));
    let url = receiver.url("ok", 0);
    // Client and receiver both run in this process: its CPU is the pair's (issue 21
    // compares a delivery's whole-stack CPU with it).
    let (_, cpu0) = proc_stats(std::process::id());
    let started = Instant::now();
    futures::stream::iter(0..total)
        .map(|_| {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send();
            async move { r.await.expect("post").status() }
        })
        .buffer_unordered(in_flight)
        .for_each(|_| async {})
        .await;
    let secs = started.elapsed().as_secs_f64();
    let (_, cpu1) = proc_stats(std::process::id());
    json!({
        "requests": total, "in_flight": in_flight, "per_second": total as f64 / secs,
        "cpu_s_per_100k": (cpu1 - cpu0) * 100_000.0 / total as f64,
    })
}

/// (2) JetStream publish with 256 acks in flight, then one pull consumer draining with acks.
pub async fn raw_jetstream(total: usize) -> Value {
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    let stream = js
        .create_stream(stream::Config {
            name: "RAW".into(),
            subjects: vec!["raw.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream");
    let payload = bytes::Bytes::from(envelope(0, "bench.raw"));
    let started = Instant::now();
    let mut acks = futures::stream::FuturesUnordered::new();
    for _ in 0..total {
        acks.push(
            js.publish("raw.x", payload.clone())
                .await
                .expect("publish")
                .into_future(),
        );
        if acks.len() >= 256 {
            acks.next().await.expect("ack").expect("acked");
        }
    }
    while let Some(a) = acks.next().await {
        a.expect("acked");
    }
    let publish = total as f64 / started.elapsed().as_secs_f64();
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("c".into()),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(500)
        .messages()
        .await
        .expect("messages");
    for _ in 0..total {
        let m = messages.next().await.expect("message").expect("ok");
        m.ack().await.expect("ack");
    }
    let consume = total as f64 / started.elapsed().as_secs_f64();
    json!({ "publish_per_second": publish, "pull_ack_per_second": consume })
}

/// (3) Ingest over HTTP (single and batches of 100) and over NATS publish.
pub async fn ingest(total: usize) -> Value {
    let nats = Nats::start();
    let service = Service::start(&nats.url(), "api", &[]).await;
    let client = http_client();
    let url = format!("{}/v1/events", service.base());
    let started = Instant::now();
    futures::stream::iter(0..total)
        .map(|i| {
            let body = json!({"type": "bench.single", "data": {"i": i, "pad": pad()}});
            let r = client.post(&url).json(&body).send();
            async move { assert_eq!(r.await.expect("post").status(), 202) }
        })
        .buffer_unordered(64)
        .for_each(|_| async {})
        .await;
    let single = total as f64 / started.elapsed().as_secs_f64();
    let batch_url = format!("{}/v1/events/batch", service.base());
    let batches = total / 100;
    let started = Instant::now();
    futures::stream::iter(0..batches)
        .map(|b| {
            let events: Vec<Value> = (0..100)
                .map(|i| json!({"type": "bench.batch", "data": {"i": b * 100 + i, "pad": pad()}}))
                .collect();
            let r = client
                .post(&batch_url)
                .json(&json!({"events": events}))
                .send();
            async move { assert_eq!(r.await.expect("post").status(), 200) }
        })
        .buffer_unordered(8)
        .for_each(|_| async {})
        .await;
    let batch = (batches * 100) as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    preload(&nats.url(), total, 1).await;
    let nats_publish = total as f64 / started.elapsed().as_secs_f64();
    json!({ "http_single_per_second": single, "http_batch100_per_second": batch, "nats_publish_per_second": nats_publish })
}

/// (3b) Single-event HTTP ingest with `concurrency` requests in flight (issue 21: 32),
/// each request timed: the rate, p50 / p99 of the 202, and the CPU of the API process and
/// nats-server per 1,000 accepted events. Compared with `raw_http` (same client).
pub async fn ingest_single(total: usize, concurrency: usize) -> Value {
    let nats = Nats::start();
    let service = Service::start(&nats.url(), "api", &[]).await;
    let client = http_client();
    let url = format!("{}/v1/events", service.base());
    // One body for every request, as raw HTTP sends one: the load driver's own JSON work
    // is not hookstream's (the API draws a new id for each).
    let body = bytes::Bytes::from(
        json!({"type": "bench.single", "data": {"i": 0, "pad": pad()}}).to_string(),
    );
    let post = |_: usize| {
        let r = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send();
        async move {
            let sent = Instant::now();
            assert_eq!(r.await.expect("post").status(), 202);
            sent.elapsed().as_micros() as u64
        }
    };
    // Warm the connections and the API's caches first: not counted.
    futures::stream::iter(0..concurrency * 10)
        .map(post)
        .buffer_unordered(concurrency)
        .for_each(|_| async {})
        .await;
    let (_, cpu0) = proc_stats(service.pid());
    let (_, ncpu0) = proc_stats(nats.pid());
    let (_, dcpu0) = proc_stats(std::process::id());
    let started = Instant::now();
    let latencies: Vec<u64> = futures::stream::iter(0..total)
        .map(post)
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    let (_, cpu1) = proc_stats(service.pid());
    let (_, ncpu1) = proc_stats(nats.pid());
    let (_, dcpu1) = proc_stats(std::process::id());
    let (p50, p90, p99, max) = percentiles(latencies);
    json!({
        "events": total, "concurrency": concurrency,
        "per_second": total as f64 / secs,
        "p50_ms": p50 as f64 / 1000.0, "p90_ms": p90 as f64 / 1000.0,
        "p99_ms": p99 as f64 / 1000.0, "max_ms": max as f64 / 1000.0,
        "api_cpu_ms_per_1k": (cpu1 - cpu0) * 1e6 / total as f64,
        "nats_cpu_ms_per_1k": (ncpu1 - ncpu0) * 1e6 / total as f64,
        // The load driver (this process): the reqwest client sending the requests.
        "driver_cpu_ms_per_1k": (dcpu1 - dcpu0) * 1e6 / total as f64,
    })
}

/// How long a drain may take before it is reported as incomplete (with the rate reached).
/// 180 s: 10,000 destinations with 2 events each create 10,000 consumers, which took
/// longer than 60 s in the first routed run (ADR 0010); the run should say how long.
const DRAIN_BUDGET: Duration = Duration::from_secs(180);

/// (4) A pre-loaded backlog spread over `dests` destinations, drained by a fresh worker.
/// `warm`: the destinations were busy just before (one event each, delivered by another
/// worker that then stopped), so their consumers exist, as for destinations in steady
/// traffic; cold, each destination's consumer is created by the drain (the routed layout
/// creates consumers on demand; the old layout's always exist).
pub async fn drain(dests: usize, total: usize, mode: &str, warm: bool) -> Value {
    let nats = Nats::start();
    let receiver = Receiver::start().await;
    let env = mode_env(mode);
    let api = Service::start(&nats.url(), "api", &env).await;
    let created = Instant::now();
    create_destinations(&api.base(), dests, |i| receiver.url("ok", i), json!({})).await;
    let create_s = created.elapsed().as_secs_f64();
    let mut offset = 0u64;
    if warm {
        let warmer = Service::start(&nats.url(), "worker", &env).await;
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let js = jetstream::new(client);
        preload_events(&js, &(total..total + dests).collect::<Vec<_>>(), dests).await;
        if receiver
            .wait_for(dests as u64, Duration::from_secs(120))
            .await
            .is_none()
        {
            return json!({ "destinations": dests, "mode": mode, "error": "warm-up not delivered in 120 s" });
        }
        drop(warmer);
        offset = receiver.received();
    }
    preload(&nats.url(), total, dests).await;
    let spawned = Instant::now();
    let worker = Service::spawn(&nats.url(), "worker", &env);
    let (_, cpu0) = proc_stats(worker.pid());
    let (_, ncpu0) = proc_stats(nats.pid());
    let Some(first) = receiver.wait_for(offset + 1, Duration::from_secs(60)).await else {
        return json!({ "destinations": dests, "mode": mode, "error": "nothing delivered in 60 s" });
    };
    // Deliveries start before the worker reports ready (its first sweep wakes the
    // backlog), so the clock starts at the first delivery, watched from the spawn.
    let first_delivery_s = (first - spawned).as_secs_f64();
    let last = receiver.wait_for(offset + total as u64, DRAIN_BUDGET).await;
    let end = last.unwrap_or_else(Instant::now);
    let delivered = (receiver.received() - offset).min(total as u64) as usize;
    worker.wait_ready().await;
    let ready = spawned.elapsed().as_secs_f64();
    let (rss, cpu1) = proc_stats(worker.pid());
    let (nats_rss, ncpu1) = proc_stats(nats.pid());
    let secs = (end - first).as_secs_f64().max(1e-3);
    json!({
        "destinations": dests, "events": total, "mode": mode, "warm": warm,
        "complete": last.is_some(), "delivered": delivered,
        "per_second": delivered.saturating_sub(1) as f64 / secs,
        "create_destinations_s": create_s,
        "worker_ready_s": ready,
        "first_delivery_s": first_delivery_s,
        "worker_cpu_s_per_100k": (cpu1 - cpu0) * 100_000.0 / delivered.max(1) as f64,
        "nats_cpu_s_per_100k": (ncpu1 - ncpu0) * 100_000.0 / delivered.max(1) as f64,
        "seconds": secs,
        "worker_rss_mib": rss as f64 / 1048576.0,
        "nats_rss_mib": nats_rss as f64 / 1048576.0,
    })
}

/// (4b) Fan-out: a pre-loaded backlog of `events` events, each of them for all `fanout`
/// destinations (every destination subscribes to `bench.d0`), drained by a fresh worker;
/// the rate counts deliveries. Issue 21 asks this to be the cheapest case per delivery:
/// one event's bytes and headers serve all its deliveries.
pub async fn drain_fanout(fanout: usize, events: usize) -> Value {
    let nats = Nats::start();
    let receiver = Receiver::start().await;
    let env = mode_env("routed");
    let api = Service::start(&nats.url(), "api", &env).await;
    create_destinations(
        &api.base(),
        fanout,
        |i| receiver.url("ok", i),
        json!({"event_types": ["bench.d0"]}),
    )
    .await;
    preload(&nats.url(), events, 1).await;
    let total = (events * fanout) as u64;
    let worker = Service::spawn(&nats.url(), "worker", &env);
    let (_, cpu0) = proc_stats(worker.pid());
    let (_, ncpu0) = proc_stats(nats.pid());
    let Some(first) = receiver.wait_for(1, Duration::from_secs(60)).await else {
        return json!({ "fanout": fanout, "error": "nothing delivered in 60 s" });
    };
    let last = receiver.wait_for(total, DRAIN_BUDGET).await;
    let end = last.unwrap_or_else(Instant::now);
    let delivered = receiver.received().min(total);
    let (rss, cpu1) = proc_stats(worker.pid());
    let (nats_rss, ncpu1) = proc_stats(nats.pid());
    let secs = (end - first).as_secs_f64().max(1e-3);
    json!({
        "fanout": fanout, "events": events, "complete": last.is_some(),
        "delivered": delivered,
        "per_second": delivered.saturating_sub(1) as f64 / secs,
        "worker_cpu_s_per_100k": (cpu1 - cpu0) * 100_000.0 / delivered.max(1) as f64,
        "nats_cpu_s_per_100k": (ncpu1 - ncpu0) * 100_000.0 / delivered.max(1) as f64,
        "seconds": secs,
        "worker_rss_mib": rss as f64 / 1048576.0,
        "nats_rss_mib": nats_rss as f64 / 1048576.0,
    })
}

/// (6) Cost of idle destinations: memory and CPU of hookstream (API and worker in one
/// process) and nats-server, and the time a second worker takes to be ready against them.
pub async fn idle(dests: usize, mode: &str) -> Value {
    let nats = Nats::start();
    let receiver = Receiver::start().await;
    let env = mode_env(mode);
    let service = Service::start(&nats.url(), "serve", &env).await;
    let started = Instant::now();
    create_destinations(&service.base(), dests, |i| receiver.url("ok", i), json!({})).await;
    let create_s = started.elapsed().as_secs_f64();
    // Idle means after the writes have settled: nats-server compacts the destinations
    // bucket and the watchers catch up for seconds after 10,000 writes (measured 44 % of
    // a core 3 s after them, 1.3 % by hand a minute later).
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (_, hs0) = proc_stats(service.pid());
    let (_, n0) = proc_stats(nats.pid());
    // Exactly two sweep intervals: the window holds two sweeps (the only periodic work
    // of an idle worker) wherever it falls.
    let window = 2.0 * SWEEP_INTERVAL.as_secs_f64();
    tokio::time::sleep(2 * SWEEP_INTERVAL).await;
    let (hs_rss, hs1) = proc_stats(service.pid());
    let (nats_rss, n1) = proc_stats(nats.pid());
    let spawned = Instant::now();
    let second = Service::start(&nats.url(), "worker", &env).await;
    let second_ready_s = spawned.elapsed().as_secs_f64();
    drop(second);
    let mib = |b: u64| b as f64 / 1048576.0;
    json!({
        "destinations": dests, "mode": mode, "create_s": create_s,
        "hookstream_rss_mib": mib(hs_rss), "nats_rss_mib": mib(nats_rss),
        "total_rss_mib": mib(hs_rss + nats_rss),
        "hookstream_cpu_pct": (hs1 - hs0) / window * 100.0,
        "nats_cpu_pct": (n1 - n0) / window * 100.0,
        "second_worker_ready_s": second_ready_s,
    })
}

/// (5) Ingest → receipt latency at a fixed offered rate over HTTP.
pub async fn latency(dests: usize, rate: usize, total: usize, mode: &str) -> Value {
    let nats = Nats::start();
    let receiver = Receiver::start().await;
    let service = Service::start(&nats.url(), "serve", &mode_env(mode)).await;
    create_destinations(&service.base(), dests, |i| receiver.url("ok", i), json!({})).await;
    // Let the first sweep and the creation burst settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    receiver.state.record_latency.store(true, Ordering::Relaxed);
    let client = http_client();
    let url = format!("{}/v1/events", service.base());
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(512));
    // How long the 202 took: the part of the latency that is ingest, not delivery.
    let accepted_us = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total)));
    for i in 0..total {
        tick.tick().await;
        let body =
            json!({"type": format!("bench.d{}", i % dests), "data": {"t": now_ns(), "pad": pad()}});
        let permit = in_flight.clone().acquire_owned().await.expect("semaphore");
        let r = client.post(&url).json(&body).send();
        let accepted_us = accepted_us.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let sent = Instant::now();
            if r.await.is_ok_and(|r| r.status().is_success()) {
                let us = sent.elapsed().as_micros() as u64;
                accepted_us.lock().expect("not poisoned").push(us);
            }
        });
    }
    let done = receiver
        .wait_for(total as u64, Duration::from_secs(60))
        .await
        .is_some();
    let latencies = std::mem::take(&mut *receiver.state.latencies_us.lock().await);
    let (p50, p90, p99, max) = percentiles(latencies);
    let accepted = std::mem::take(&mut *accepted_us.lock().expect("not poisoned"));
    let (a50, _, a99, amax) = percentiles(accepted);
    json!({
        "destinations": dests, "offered_per_second": rate, "events": total, "mode": mode,
        "complete": done, "p50_ms": p50 as f64 / 1000.0, "p90_ms": p90 as f64 / 1000.0,
        "p99_ms": p99 as f64 / 1000.0, "max_ms": max as f64 / 1000.0,
        "accepted_p50_ms": a50 as f64 / 1000.0, "accepted_p99_ms": a99 as f64 / 1000.0,
        "accepted_max_ms": amax as f64 / 1000.0,
    })
}

/// (7) The healthy destinations' delivery rate while 10 % of the destinations answer 500
/// and 10 % never answer, in the same run against two baselines:
/// - `alone`: only the healthy destinations' events, nobody else's in the stream;
/// - `all_healthy`: the same destinations and events, the other 20 % answering 200 too
///   (their deliveries are not counted as the healthy ones').
pub async fn failure_mix(total: usize) -> Value {
    let dests = 100;
    let failing = |i: usize| match i {
        0..10 => "fail",
        10..20 => "hang",
        _ => "ok",
    };
    let sound = |i: usize| if i < 20 { "spare" } else { "ok" };
    let alone = healthy_rate(total, dests, &failing, false).await;
    let all_healthy = healthy_rate(total, dests, &sound, true).await;
    let mixed = healthy_rate(total, dests, &failing, true).await;
    let rate = |v: &Value| v.get("healthy_per_second").and_then(Value::as_f64);
    let (Some(alone_rate), Some(sound_rate), Some(mix)) =
        (rate(&alone), rate(&all_healthy), rate(&mixed))
    else {
        return json!({ "alone": alone, "all_healthy": all_healthy, "mixed": mixed, "error": "incomplete" });
    };
    json!({
        "healthy_per_second": mix,
        "alone_per_second": alone_rate,
        "all_healthy_per_second": sound_rate,
        "kept_vs_alone_pct": mix / alone_rate * 100.0,
        "kept_vs_all_healthy_pct": mix / sound_rate * 100.0,
        "alone": alone,
        "all_healthy": all_healthy,
        "mixed": mixed,
    })
}

/// Delivers `total` events over `dests` destinations (or, without `with_others`, only the
/// events of the `ok` ones) and answers the `ok` destinations' delivery rate.
async fn healthy_rate(
    total: usize,
    dests: usize,
    kind: &dyn Fn(usize) -> &'static str,
    with_others: bool,
) -> Value {
    let nats = Nats::start();
    let receiver = Receiver::start().await;
    let env = mode_env("routed");
    let api = Service::start(&nats.url(), "api", &env).await;
    create_destinations(&api.base(), dests, |i| receiver.url(kind(i), i), json!({})).await;
    // Event i goes to destination i % dests; the healthy-only run skips the others.
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    let wanted: Vec<usize> = (0..total)
        .filter(|i| with_others || kind(i % dests) == "ok")
        .collect();
    preload_events(&js, &wanted, dests).await;
    let healthy = wanted.iter().filter(|i| kind(**i % dests) == "ok").count() as u64;
    let worker = Service::start(&nats.url(), "worker", &env).await;
    let (_, cpu0) = proc_stats(worker.pid());
    let (_, ncpu0) = proc_stats(nats.pid());
    let (in0, api0) = nats.counts().await;
    let Some(first) = receiver.wait_for(1, Duration::from_secs(60)).await else {
        return json!({ "error": "nothing delivered in 60 s" });
    };
    let last = receiver.wait_for(healthy, DRAIN_BUDGET).await;
    let (_, cpu1) = proc_stats(worker.pid());
    let (_, ncpu1) = proc_stats(nats.pid());
    let (in1, api1) = nats.counts().await;
    let unhealthy = receiver.state.unhealthy.load(Ordering::Relaxed);
    drop(worker);
    match last {
        Some(last) => json!({
            "healthy_events": healthy,
            "healthy_per_second": (healthy - 1) as f64 / (last - first).as_secs_f64().max(1e-3),
            "other_requests": unhealthy,
            "worker_cpu_s": cpu1 - cpu0,
            "nats_cpu_s": ncpu1 - ncpu0,
            "nats_in_msgs": in1 - in0,
            "nats_api_requests": api1 - api0,
        }),
        None => json!({ "error": format!("only {} of {healthy} delivered", receiver.received()) }),
    }
}

fn get(results: &[(String, Value)], name: &str, key: &str) -> Option<f64> {
    results
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.get(key))
        .and_then(|v| v.as_f64())
}

/// The table, with the ratios the issues ask for.
pub fn summarise(results: &[(String, Value)]) -> String {
    let fig = |name: &str, key: &str| get(results, name, key);
    let pct = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b * 100.0);
    let mut rows: Vec<(String, Option<f64>, &str)> = Vec::new();
    let raw = fig("raw_http", "per_second");
    for (label, name, key) in [
        ("raw HTTP (reference 1.0), req/s", "raw_http", "per_second"),
        (
            "raw JetStream publish, msg/s",
            "raw_jetstream",
            "publish_per_second",
        ),
        (
            "raw JetStream pull+ack, msg/s",
            "raw_jetstream",
            "pull_ack_per_second",
        ),
        (
            "ingest HTTP single, ev/s",
            "ingest",
            "http_single_per_second",
        ),
        (
            "ingest HTTP batch 100, ev/s",
            "ingest",
            "http_batch100_per_second",
        ),
        (
            "ingest NATS publish, ev/s",
            "ingest",
            "nats_publish_per_second",
        ),
    ] {
        rows.push((label.into(), fig(name, key), ""));
    }
    let raw_cpu = fig("raw_http", "cpu_s_per_100k");
    rows.push((
        "raw HTTP: client + receiver CPU s per 100k".into(),
        raw_cpu,
        "",
    ));
    for name in ["drain_1_routed", "drain_fanout_100"] {
        let stack = fig(name, "worker_cpu_s_per_100k")
            .zip(fig(name, "nats_cpu_s_per_100k"))
            .map(|(w, n)| w + n);
        rows.push((
            format!("{name}: worker + nats-server CPU / raw HTTP's per request"),
            stack.zip(raw_cpu).map(|(s, r)| s / r),
            " ×",
        ));
    }
    let c32 = fig("ingest_c32", "per_second");
    rows.push(("ingest HTTP single at concurrency 32, ev/s".into(), c32, ""));
    rows.push((
        "ingest HTTP single at concurrency 32 / raw HTTP".into(),
        pct(c32, raw),
        " %",
    ));
    for p in ["p50", "p99"] {
        rows.push((
            format!("ingest HTTP single at concurrency 32, {p} ms"),
            fig("ingest_c32", &format!("{p}_ms")),
            "",
        ));
    }
    for (label, key) in [
        ("API", "api_cpu_ms_per_1k"),
        ("nats-server", "nats_cpu_ms_per_1k"),
    ] {
        rows.push((
            format!("ingest at concurrency 32: {label} CPU ms per 1k events"),
            fig("ingest_c32", key),
            "",
        ));
    }
    for mode in ["routed", "old"] {
        let one = fig(&format!("drain_1_{mode}"), "per_second");
        for d in [1, 100, 1000, 10000] {
            let name = format!("drain_{d}_{mode}");
            let rate = fig(&name, "per_second");
            rows.push((format!("[{mode}] drain {d} dest, deliveries/s"), rate, ""));
            rows.push((
                format!("[{mode}] drain {d} dest / raw HTTP"),
                pct(rate, raw),
                " %",
            ));
            rows.push((
                format!("[{mode}] drain {d} dest / drain 1 dest"),
                pct(rate, one),
                " %",
            ));
            rows.push((
                format!("[{mode}] drain {d}: worker CPU s per 100k"),
                fig(&name, "worker_cpu_s_per_100k"),
                "",
            ));
        }
        if mode == "routed" {
            for d in [1000, 10000] {
                let name = format!("drain_{d}_routed_warm");
                let rate = fig(&name, "per_second");
                rows.push((
                    format!("[routed] drain {d} dest, consumers warm, deliveries/s"),
                    rate,
                    "",
                ));
                rows.push((
                    format!("[routed] drain {d} dest warm / drain 1 dest"),
                    pct(rate, one),
                    " %",
                ));
                rows.push((
                    format!("[routed] drain {d} warm: nats-server CPU s per 100k"),
                    fig(&name, "nats_cpu_s_per_100k"),
                    "",
                ));
            }
        }
        for d in [10, 1000] {
            let name = format!("latency_{d}_{mode}");
            for p in ["p50", "p99"] {
                rows.push((
                    format!("[{mode}] latency {d} dest @1000/s {p} ms"),
                    fig(&name, &format!("{p}_ms")),
                    "",
                ));
            }
        }
        let idle = format!("idle_10000_{mode}");
        for (label, key) in [
            ("hookstream+nats RSS MiB", "total_rss_mib"),
            ("hookstream CPU %", "hookstream_cpu_pct"),
            ("nats-server CPU %", "nats_cpu_pct"),
            ("2nd worker ready s", "second_worker_ready_s"),
        ] {
            rows.push((format!("[{mode}] idle 10k: {label}"), fig(&idle, key), ""));
        }
    }
    let one = fig("drain_1_routed", "per_second");
    rows.push((
        "drain 1 dest: routed / old layout".into(),
        pct(one, fig("drain_1_old", "per_second")),
        " %",
    ));
    for d in [1, 100, 1000, 10000] {
        rows.push((
            format!("[routed] drain {d}: nats-server CPU s per 100k"),
            fig(&format!("drain_{d}_routed"), "nats_cpu_s_per_100k"),
            "",
        ));
    }
    let fanout = fig("drain_fanout_100", "per_second");
    rows.push((
        "[routed] drain 1 event -> 100 dest, deliveries/s".into(),
        fanout,
        "",
    ));
    rows.push((
        "[routed] fan-out 100 / drain 1 dest (target >= 100 %)".into(),
        pct(fanout, one),
        " %",
    ));
    rows.push((
        "[routed] fan-out 100: worker + nats-server CPU s per 100k".into(),
        fig("drain_fanout_100", "worker_cpu_s_per_100k")
            .zip(fig("drain_fanout_100", "nats_cpu_s_per_100k"))
            .map(|(w, n)| w + n),
        "",
    ));
    for f in [1, 10, 100] {
        rows.push((
            format!("router, fan-out {f}: events/s"),
            fig(&format!("route_fanout_{f}"), "events_per_second"),
            "",
        ));
    }
    for k in [1, 4, 16, 32] {
        let name = format!("shard_fanout_1000_{k}s");
        rows.push((
            format!("broker limit, 1000 consumers on {k} shard(s), msg/s"),
            fig(&name, "per_second"),
            "",
        ));
        rows.push((
            format!("broker limit, {k} shard(s): nats CPU s per 100k"),
            fig(&name, "nats_cpu_s_per_100k"),
            "",
        ));
    }
    rows.push((
        "bytes stored per delivery (shard)".into(),
        fig("shard_fanout_1000_32s", "bytes_stored_per_delivery"),
        "",
    ));
    for idle in [0, 100, 1000, 10000] {
        rows.push((
            format!("WorkQueue acks/s beside {idle} idle consumers"),
            fig(&format!("ack_cost_{idle}"), "acked_per_second"),
            "",
        ));
    }
    for filters in [1, 2] {
        let rate = fig(&format!("raw_fanout_1000_{filters}f"), "per_second");
        rows.push((
            format!("broker limit, 1000 consumers, {filters} filter(s), msg/s"),
            rate,
            "",
        ));
        rows.push((
            format!("broker limit 1000x{filters}f / drain 1 dest"),
            pct(rate, one),
            " %",
        ));
    }
    for (label, key, unit) in [
        ("healthy alone, deliveries/s", "alone_per_second", ""),
        (
            "beside 20 % healthy others, deliveries/s",
            "all_healthy_per_second",
            "",
        ),
        (
            "beside 10 % 500 + 10 % hang, deliveries/s",
            "healthy_per_second",
            "",
        ),
        ("healthy rate kept vs alone", "kept_vs_alone_pct", " %"),
        (
            "healthy rate kept vs all healthy",
            "kept_vs_all_healthy_pct",
            " %",
        ),
    ] {
        rows.push((
            format!("failure mix: {label}"),
            fig("failure_mix", key),
            unit,
        ));
    }
    let mut out = String::from("| figure | value |\n|---|---:|\n");
    for (label, value, unit) in rows {
        if let Some(v) = value {
            out.push_str(&format!("| {label} | {v:.1}{unit} |\n"));
        }
    }
    out
}
