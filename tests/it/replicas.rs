//! Two replicas on one nats-server share the destinations and their durable consumers:
//! every event reaches every destination (about once, not once per replica), per-destination
//! concurrency holds across both, and a destination created or deleted through one replica
//! is seen by the other's workers at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::steps::{create, eventually};
use crate::common::{NatsServer, Receiver, ServiceProcess, spawn_app, spawn_app_on};

/// Requests per `webhook-id` at one receiver.
fn count_ids(requests: &[crate::common::Request]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in requests {
        let id = request.header("webhook-id").expect("webhook-id");
        *counts.entry(id.to_string()).or_default() += 1;
    }
    counts
}

/// Receives until every id in `wanted` was seen or `timeout` passes; returns everything
/// received (possibly more than `wanted.len()` requests, with duplicates).
async fn receive_ids(
    receiver: &Receiver,
    wanted: &[String],
    timeout: Duration,
) -> Vec<crate::common::Request> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = Vec::new();
    let mut missing: std::collections::HashSet<&str> = wanted.iter().map(String::as_str).collect();
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(request) = receiver.recv_timeout(left).await else {
            break;
        };
        if let Some(id) = request.header("webhook-id") {
            missing.remove(id);
        }
        got.push(request);
    }
    got
}

#[tokio::test]
async fn events_posted_to_either_replica_reach_every_destination_about_once() {
    const EVENTS: usize = 400;
    let a = spawn_app().await;
    let b = spawn_app_on(&a.nats, |_| {}).await;
    let receivers = [Receiver::start().await, Receiver::start().await];
    for receiver in &receivers {
        receiver.set_delay(Duration::from_millis(5));
    }
    // One destination made on each replica. Both keep the default max_in_flight (32),
    // which this load does not reach: see the stall test below for what happens when it
    // is reached with two replicas.
    create(
        &a,
        json!({"url": receivers[0].url("/one"), "event_types": ["order.*"]}),
    )
    .await;
    create(
        &b,
        json!({"url": receivers[1].url("/two"), "event_types": ["order.>"]}),
    )
    .await;

    let started = Instant::now();
    let ids: Vec<String> = (0..EVENTS).map(|i| format!("rep-{i}")).collect();
    let answers: Vec<(String, StatusCode, Value)> = futures::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| {
            let app = if i % 2 == 0 { &a } else { &b };
            async move {
                let (status, body) = app
                    .post_event(json!({"id": id, "type": "order.created", "data": {"i": i}}))
                    .await;
                (id.clone(), status, body)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (id, status, body) in &answers {
        assert_eq!(*status, StatusCode::ACCEPTED, "{id}: {body}");
    }

    let mut totals = Vec::new();
    for (n, receiver) in receivers.iter().enumerate() {
        let got = receive_ids(receiver, &ids, Duration::from_secs(30)).await;
        // Anything else already on its way (a late duplicate) counts too.
        let mut got = got;
        got.extend(receiver.drain().await);
        let counts = count_ids(&got);
        let missing: Vec<&String> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
        assert!(
            missing.is_empty(),
            "destination {n}: {} of {EVENTS} events never delivered, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        totals.push(got.len());
    }
    // A short quiet period catches duplicates sent after the last first delivery.
    for (n, receiver) in receivers.iter().enumerate() {
        let late = receiver.collect(EVENTS, Duration::from_millis(500)).await;
        totals[n] += late.len();
    }
    let duplicates: Vec<usize> = totals.iter().map(|t| t - EVENTS).collect();
    eprintln!(
        "replicas: {EVENTS} events x 2 destinations in {:?}; requests {totals:?}, duplicates {duplicates:?}",
        started.elapsed(),
    );
    // Shared durable consumers: each event goes to one replica's worker, not to both.
    for (n, total) in totals.iter().enumerate() {
        assert!(
            *total <= EVENTS + EVENTS / 20,
            "destination {n}: {total} requests for {EVENTS} events; replicas are both sending"
        );
    }
}

#[tokio::test]
async fn max_in_flight_holds_across_replicas_together() {
    const EVENTS: usize = 60;
    const MAX_IN_FLIGHT: u32 = 3;
    let a = spawn_app().await;
    let b = spawn_app_on(&a.nats, |_| {}).await;
    let receiver = Receiver::start().await;
    // Slow enough that both replicas have work waiting while the limit is full.
    receiver.set_delay(Duration::from_millis(50));
    create(
        &a,
        json!({
            "url": receiver.url("/hook"),
            "event_types": ["order.*"],
            "max_in_flight": MAX_IN_FLIGHT,
        }),
    )
    .await;
    let started = Instant::now();
    let ids: Vec<String> = (0..EVENTS).map(|i| format!("lim-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let app = if i % 2 == 0 { &a } else { &b };
        let (status, body) = app
            .post_event(json!({"id": id, "type": "order.created", "data": {"i": i}}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{id}: {body}");
    }
    // 60 x 50 ms / 4 is under a second; 30 s leaves room for the stall bug (see below).
    let got = receive_ids(&receiver, &ids, Duration::from_secs(30)).await;
    let counts = count_ids(&got);
    eprintln!(
        "max_in_flight {MAX_IN_FLIGHT}: {} events in {:?}, at most {} at once",
        counts.len(),
        started.elapsed(),
        receiver.max_concurrent()
    );
    assert_eq!(counts.len(), EVENTS, "events delivered within 30 s");
    assert!(
        receiver.max_concurrent() <= MAX_IN_FLIGHT as usize,
        "max_in_flight {MAX_IN_FLIGHT} exceeded across replicas: {} at once",
        receiver.max_concurrent()
    );
    assert!(
        receiver.max_concurrent() >= 2,
        "the limit was never approached; the test proves nothing"
    );
}

#[tokio::test]
async fn a_destination_created_on_one_replica_is_delivered_by_the_other_at_once() {
    let mut a = spawn_app().await;
    let b = spawn_app_on(&a.nats, |_| {}).await;
    let receiver = Receiver::start().await;

    let created_at = Instant::now();
    let id = create(
        &a,
        json!({"url": receiver.url("/hook"), "event_types": ["user.signed_up"]}),
    )
    .await;
    // Only B's workers are left to deliver, and B learns of the destination only through
    // the destinations bucket.
    a.stop().await;
    let (status, body) = b.get(&format!("/v1/destinations/{id}")).await;
    assert_eq!(status, StatusCode::OK, "B reads the destination: {body}");

    let (status, body) = b
        .post_event(json!({"type": "user.signed_up", "data": {"name": "ada"}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let request = receiver
        .recv_timeout(Duration::from_secs(5))
        .await
        .expect("B delivers to a destination created on A within 5 s");
    assert_eq!(request.header("webhook-id"), body["id"].as_str());
    eprintln!(
        "created on A, delivered by B {:?} after the create",
        created_at.elapsed()
    );
}

#[tokio::test]
async fn deleting_a_destination_on_one_replica_stops_deliveries_from_the_other() {
    let a = spawn_app().await;
    let b = spawn_app_on(&a.nats, |_| {}).await;
    let receiver = Receiver::start().await;
    // Failing, so the events keep being retried by whichever replica holds them.
    receiver.set_status(500);
    let id = create(
        &b,
        json!({
            "url": receiver.url("/hook"),
            "event_types": ["order.*"],
            "timeout_ms": 1000,
            "retry": {"schedule_ms": [100], "max_attempts": 100},
        }),
    )
    .await;
    for i in 0..5 {
        let (status, body) = b
            .post_event(json!({"type": "order.created", "data": {"i": i}}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let retrying = receiver.collect(15, Duration::from_secs(15)).await;
    assert_eq!(retrying.len(), 15, "the events are being retried");

    let (status, body) = a.delete(&format!("/v1/destinations/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = b.get(&format!("/v1/destinations/{id}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "B still shows the deleted destination"
    );

    // Requests already under way when the delete landed may still finish (timeout 1 s).
    let settle = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < settle {
        let _ = receiver
            .recv_timeout(settle.saturating_duration_since(Instant::now()))
            .await;
    }
    // New events for the deleted destination's types go nowhere, and no retry continues,
    // through several sweeps (every 500 ms) of both replicas.
    for app in [&a, &b] {
        let (status, body) = app
            .post_event(json!({"type": "order.created", "data": {"after": "delete"}}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    if let Some(late) = receiver.recv_timeout(Duration::from_secs(2)).await {
        panic!(
            "a deleted destination still got a request: webhook-id {:?}, hs-attempt {:?}",
            late.header("webhook-id"),
            late.header("hs-attempt")
        );
    }
    // No sweep brought its consumer back.
    let js = async_nats::jetstream::new(a.nats.client().await);
    let stream = js.get_stream("HS_EVENTS").await.expect("HS_EVENTS");
    assert!(
        stream.consumer_info(format!("dest_{id}")).await.is_err(),
        "the consumer of the deleted destination exists again"
    );
}

/// `hookstream_deliveries_total{outcome="delivered"}` of one process (the recorder is
/// process-global, which is why this needs real processes, not in-process replicas).
async fn delivered_count(client: &reqwest::Client, service: &ServiceProcess) -> f64 {
    let text = client
        .get(format!("{}/metrics", service.base_url()))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| {
            line.starts_with("hookstream_deliveries_total{")
                && line.contains(r#"outcome="delivered""#)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Two real processes, one destination, 400 events posted half to each. A single process
/// delivers them in about a second; the bound leaves room for a slow machine but not for
/// a pull that waits out NATS's 5 s request timeout.
#[tokio::test]
async fn two_service_processes_share_one_destination_without_stalling() {
    const EVENTS: usize = 400;
    const WITHIN: Duration = Duration::from_secs(4);
    let nats = NatsServer::start().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(20));
    let first = ServiceProcess::spawn(&nats.url(), &[]).await;
    let second = ServiceProcess::spawn(&nats.url(), &[]).await;
    let client = reqwest::Client::new();
    let post = |url: String, body: Value| {
        let client = client.clone();
        async move {
            let response = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("POST to the service");
            let status = response.status();
            let body: Value = serde_json::from_slice(&response.bytes().await.expect("body"))
                .unwrap_or(Value::Null);
            (status, body)
        }
    };
    let (status, body) = post(
        format!("{}/v1/destinations", first.base_url()),
        json!({"url": receiver.url("/hook"), "event_types": ["order.*"], "max_in_flight": 8}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let started = Instant::now();
    let ids: Vec<String> = (0..EVENTS).map(|i| format!("proc-{i}")).collect();
    let bases = [first.base_url(), second.base_url()];
    let answers: Vec<(StatusCode, Value)> = futures::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| {
            post(
                format!("{}/v1/events", bases[i % 2]),
                json!({"id": id, "type": "order.created", "data": {"i": i}}),
            )
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
    }
    // Long enough to see a stall end (and measure it), short enough to fail fast.
    let got = receive_ids(&receiver, &ids, Duration::from_secs(12)).await;
    let took = started.elapsed();
    let counts = count_ids(&got);
    assert_eq!(
        counts.len(),
        EVENTS,
        "events delivered within 12 s by two processes"
    );

    // The counters are bumped just after the receiver answered; give the last ones a moment.
    let (a, b) = eventually(Duration::from_secs(5), async || {
        let a = delivered_count(&client, &first).await;
        let b = delivered_count(&client, &second).await;
        if a + b >= EVENTS as f64 {
            Ok((a, b))
        } else {
            Err(format!("{a} + {b} deliveries counted of {EVENTS}"))
        }
    })
    .await;
    eprintln!(
        "two processes: {a} + {b} deliveries of {EVENTS} events ({} requests) in {took:?}",
        got.len()
    );
    assert!(
        a > 0.0 && b > 0.0,
        "one process did all the work: {a} and {b}"
    );
    assert!(
        a + b <= (EVENTS + EVENTS / 20) as f64,
        "{a} + {b} deliveries for {EVENTS} events"
    );
    assert!(
        took <= WITHIN,
        "{EVENTS} events took {took:?} with two processes (one alone needs about 1 s): deliveries stalled"
    );
}
