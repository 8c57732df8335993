//! The console's pages at the scale: 10,000 destinations and 1,000,000 stored
//! events, the release binary under `serve` (open on loopback, so the empty key signs
//! in). Each page is asked for `ROUNDS` times in a row, one at a time, after the router
//! has caught up; answers p50 / p99 / max and the page's size in bytes.
//!
//! The 1,000,000 events are published straight on NATS, ten tenants and four types that
//! no destination subscribes to (so they are stored, routed to nobody, and searched). A
//! thousand more go to 100 destinations, a fifth of them failing, so that the pages have
//! attempts, health, a timeline and dead letters to show.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::harness::{Nats, Receiver, Service, percentiles};
use crate::scenarios::create_destinations;

/// Requests per page.
const ROUNDS: usize = 100;
/// Destinations that get events (the others only exist).
const ACTIVE: usize = 100;
const ROUTED: usize = 1_000;
const TYPES: [&str; 4] = [
    "shop.order.created",
    "shop.order.paid",
    "user.signed_up",
    "invoice.sent",
];

pub async fn console(destinations: usize, stored: usize) -> Value {
    let nats = Nats::start();
    let receiver = Receiver::start().await;
    let service = Service::start(&nats.url(), "serve", &[]).await;
    let base = service.base();

    let started = Instant::now();
    create_destinations(
        &base,
        destinations,
        |i| receiver.url(if i % 5 == 0 { "fail" } else { "ok" }, i),
        json!({"retry": {"schedule_ms": [200], "max_attempts": 2}}),
    )
    .await;
    let create_s = started.elapsed().as_secs_f64();

    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    let started = Instant::now();
    publish(&js, stored, |i| {
        let tenant = format!("t{}", i % 10);
        let event_type = TYPES[(i / 10) % TYPES.len()];
        (format!("s{i}"), tenant, event_type.to_string())
    })
    .await;
    let publish_s = started.elapsed().as_secs_f64();
    publish(&js, ROUTED, |i| {
        (
            format!("c{i}"),
            "default".to_string(),
            format!("bench.d{}", i % ACTIVE),
        )
    })
    .await;
    let started = Instant::now();
    wait_routed(&js).await;
    let route_s = started.elapsed().as_secs_f64();
    // Every routed event attempted, the failing ones dead-lettered (two attempts 200 ms
    // apart), so the pages show settled state.
    let ok = (ROUTED - ROUTED / 5) as u64;
    receiver.wait_for(ok, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let signed_in = http
        .post(format!("{base}/console/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("key=")
        .send()
        .await
        .expect("sign in");
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();

    let middle = stored / 2;
    let pages = [
        ("destinations", "/console/destinations".to_string()),
        (
            "destinations_middle",
            format!("/console/destinations?cursor=d{}", destinations / 2),
        ),
        ("destination", "/console/destinations/d1".to_string()),
        (
            "destination_failing",
            "/console/destinations/d0".to_string(),
        ),
        ("events", "/console/events".to_string()),
        (
            "events_tenant_type",
            "/console/events?tenant=t3&event_type=shop.order.*".to_string(),
        ),
        ("events_middle", format!("/console/events?cursor={middle}")),
        ("event", "/console/events/c1".to_string()),
        ("dead_letters", "/console/dlq".to_string()),
        ("uploads", "/console/uploads".to_string()),
        ("throughput_svg", "/console/throughput.svg".to_string()),
    ];
    let mut out = serde_json::Map::new();
    for (name, path) in pages {
        out.insert(
            name.to_string(),
            measure(&http, &base, &cookie, &path).await,
        );
    }
    json!({
        "destinations": destinations,
        "stored_events": stored + ROUTED,
        "create_destinations_s": create_s,
        "publish_s": publish_s,
        "route_s": route_s,
        "rounds": ROUNDS,
        "pages": out,
    })
}

/// `ROUNDS` requests for one page, one at a time; the first (cold) one included.
async fn measure(http: &reqwest::Client, base: &str, cookie: &str, path: &str) -> Value {
    let mut micros = Vec::with_capacity(ROUNDS);
    let mut bytes = 0;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let response = http
            .get(format!("{base}{path}"))
            .header("cookie", cookie)
            .send()
            .await
            .expect("page");
        let status = response.status();
        let body = response.bytes().await.expect("page body");
        micros.push(started.elapsed().as_micros() as u64);
        assert!(status.is_success(), "{path}: {status}");
        bytes = body.len();
    }
    let (p50, _, p99, max) = percentiles(micros);
    let ms = |us: u64| us as f64 / 1000.0;
    json!({"path": path, "p50_ms": ms(p50), "p99_ms": ms(p99), "max_ms": ms(max), "bytes": bytes})
}

/// Publishes `n` envelopes straight to JetStream, 1,024 PubAcks in flight; `event(i)`
/// names the id, tenant and type of the `i`-th.
async fn publish(
    js: &jetstream::Context,
    n: usize,
    event: impl Fn(usize) -> (String, String, String),
) {
    let mut acks = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        let (id, tenant, event_type) = event(i);
        let body = serde_json::to_vec(&json!({
            "id": id, "tenant": tenant, "type": event_type, "source": "bench",
            "occurred_at": null, "received_at": "2026-01-01T00:00:00Z",
            "data": {"i": i, "note": "an event of the console benchmark"},
        }))
        .expect("envelope");
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        headers.insert("Hs-Event-Type", event_type.as_str());
        headers.insert("Hs-Tenant", tenant.as_str());
        let ack = js
            .publish_with_headers(format!("hs.ev.{tenant}.{event_type}"), headers, body.into())
            .await
            .expect("publish");
        acks.push(ack.into_future());
        if acks.len() >= 1024 {
            acks.next().await.expect("ack").expect("acked");
        }
    }
    while let Some(a) = acks.next().await {
        a.expect("acked");
    }
}

/// Until the router has acknowledged every event on `HS_EVENTS`.
async fn wait_routed(js: &jetstream::Context) {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let stream = js.get_stream("HS_EVENTS").await.expect("HS_EVENTS");
        let info = crate::routing::router_info(&stream)
            .await
            .expect("the router consumer");
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "router behind: {} pending",
            info.num_pending
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
