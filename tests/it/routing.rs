//! Routing (docs/adr/0010): the router killed with SIGKILL in the middle of a fan-out
//! loses no delivery and a standby replica takes over routing; a destination idle past
//! `delivery.consumer_idle_secs` loses its consumer and still gets its next event within
//! the documented latency; the shard count is fixed at first creation.
//! (2,000 destinations each with its own type: `scale.rs`,
//! `two_thousand_destinations_each_get_exactly_their_own_events`.)

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream;
use serde_json::json;

use crate::common::{NatsServer, Receiver, ServiceProcess, spawn_app_on, spawn_app_with, steps};

const DESTINATIONS: usize = 20;
const EVENTS: usize = 300;

/// A standby replica B is running when the pinned router A is killed with 20 destinations
/// × 300 events half routed: every (event, destination) pair arrives, repeats carry the
/// same `webhook-id` (no new ids), and the events published after the kill are routed too
/// (by B: A is gone).
#[tokio::test]
async fn router_killed_mid_fan_out_loses_no_delivery_and_a_standby_takes_over() {
    let nats = NatsServer::start().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(5));
    let mut a = ServiceProcess::spawn(&nats.url(), &[]).await;
    for i in 0..DESTINATIONS {
        let (status, body) = a
            .post(
                "/v1/destinations",
                &json!({"url": receiver.url(&format!("/d/{i}")), "event_types": ["fan.*"], "timeout_ms": 2000}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    }
    // A is the only router while the warm-up event is routed: it holds the pin.
    let js = jetstream::new(nats.client().await);
    let publish = move |i: usize| {
        let js = js.clone();
        async move {
            let id = format!("fan-{i}");
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            headers.insert("Hs-Tenant", "default");
            headers.insert("Hs-Event-Type", "fan.out");
            let body = json!({"id": id, "tenant": "default", "type": "fan.out",
                "received_at": "2026-01-01T00:00:00Z", "data": {"i": i}});
            js.publish_with_headers("hs.ev.default.fan.out", headers, body.to_string().into())
                .await
                .expect("publish")
                .await
                .expect("stored");
            id
        }
    };
    let mut wanted: HashSet<String> = HashSet::new();
    wanted.insert(publish(0).await);
    let mut got: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in receiver
        .collect(DESTINATIONS, Duration::from_secs(20))
        .await
    {
        let id = r.header("webhook-id").expect("webhook-id").to_string();
        *got.entry((id, r.uri.clone())).or_default() += 1;
    }
    assert_eq!(
        got.len(),
        DESTINATIONS,
        "the warm-up event reached every destination"
    );
    let b = ServiceProcess::spawn(&nats.url(), &[]).await;

    // Events keep coming while A is killed, so that it dies in the middle of routing.
    for i in 1..EVENTS {
        wanted.insert(format!("fan-{i}"));
    }
    let producer = tokio::spawn(async move {
        for i in 1..EVENTS {
            publish(i).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    while got.len() < DESTINATIONS * 20 {
        let r = receiver
            .recv_timeout(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("the burst stalled before the kill; A:\n{}", a.log()));
        let id = r.header("webhook-id").expect("webhook-id").to_string();
        *got.entry((id, r.uri.clone())).or_default() += 1;
    }
    a.kill9();
    let killed_after = got.len();
    producer.await.expect("producer");

    // Failover: the pin moves after 5 s, A's unacked events are routed again after the
    // router's ack wait (6 s); A's unacked deliveries after their own ack wait (12 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let total = EVENTS * DESTINATIONS;
    while got.len() < total {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(r) = receiver.recv_timeout(left).await else {
            let missing = (0..EVENTS)
                .flat_map(|e| {
                    (0..DESTINATIONS).map(move |d| (format!("fan-{e}"), format!("/d/{d}")))
                })
                .filter(|k| !got.contains_key(k))
                .take(10)
                .collect::<Vec<_>>();
            panic!(
                "{} of {total} deliveries within 60 s; missing e.g. {missing:?}\nB:\n{}",
                got.len(),
                b.log()
            );
        };
        let id = r.header("webhook-id").expect("webhook-id").to_string();
        assert!(
            wanted.contains(&id),
            "a delivery with an unknown webhook-id {id}"
        );
        *got.entry((id, r.uri.clone())).or_default() += 1;
    }
    let repeats: usize = got.values().map(|n| n - 1).sum();
    eprintln!(
        "router kill: A killed after {killed_after} deliveries; {total} deliveries, {repeats} repeated with their own webhook-id"
    );
}

/// The pinned router A is killed with a burst in its hands while events keep coming; the
/// standby B takes over. An ordered destination still gets every event in the order of
/// `HS_EVENTS`: B routes nothing newer than the events A held until they are back
/// (they return after the router's ack wait, a second after the pin moves). Repeats of an
/// event A had sent are allowed; a first arrival out of order is not.
#[tokio::test]
async fn router_takeover_keeps_an_ordered_destinations_order() {
    const BURST: usize = 2_000;
    const TRICKLE: usize = 400;
    let nats = NatsServer::start().await;
    let receiver = Receiver::start().await;
    let mut a = ServiceProcess::spawn(&nats.url(), &[]).await;
    let (status, body) = a
        .post(
            "/v1/destinations",
            &json!({"url": receiver.url("/ordered"), "event_types": ["ord.*"], "ordered": true}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let js = jetstream::new(nats.client().await);
    let message = |i: usize| {
        let id = format!("ord-{i}");
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        headers.insert("Hs-Tenant", "default");
        headers.insert("Hs-Event-Type", "ord.step");
        let body = json!({"id": id, "tenant": "default", "type": "ord.step",
            "received_at": "2026-01-01T00:00:00Z", "data": {"i": i}});
        (headers, bytes::Bytes::from(body.to_string()))
    };
    // A holds the pin: it routes the warm-up event before B exists.
    let (headers, body) = message(0);
    js.publish_with_headers("hs.ev.default.ord.step", headers, body)
        .await
        .expect("publish")
        .await
        .expect("stored");
    assert!(
        receiver
            .recv_timeout(Duration::from_secs(20))
            .await
            .is_some(),
        "the warm-up event was not delivered; A:\n{}",
        a.log()
    );
    let b = ServiceProcess::spawn(&nats.url(), &[]).await;

    // A burst A is routing when it dies, then a trickle across the takeover.
    let mut acks = Vec::with_capacity(BURST);
    for i in 1..=BURST {
        let (headers, body) = message(i);
        acks.push(
            js.publish_with_headers("hs.ev.default.ord.step", headers, body)
                .await
                .expect("publish"),
        );
    }
    for ack in acks {
        ack.await.expect("stored");
    }
    a.kill9();
    let trickle = tokio::spawn(async move {
        for i in BURST + 1..=BURST + TRICKLE {
            let (headers, body) = message(i);
            js.publish_with_headers("hs.ev.default.ord.step", headers, body)
                .await
                .expect("publish")
                .await
                .expect("stored");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });

    let mut first_arrivals: Vec<usize> = Vec::new();
    let mut seen: HashSet<usize> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < BURST + TRICKLE {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(r) = receiver.recv_timeout(left).await else {
            panic!(
                "{} of {} events within 120 s\nB:\n{}",
                seen.len(),
                BURST + TRICKLE,
                b.log()
            );
        };
        let i = r.json()["data"]["i"].as_u64().expect("data.i") as usize;
        if i > 0 && seen.insert(i) {
            first_arrivals.push(i);
        }
    }
    trickle.await.expect("trickle");
    let out_of_order: Vec<(usize, usize)> = first_arrivals
        .windows(2)
        .filter(|w| w[1] < w[0])
        .map(|w| (w[0], w[1]))
        .take(10)
        .collect();
    assert!(
        out_of_order.is_empty(),
        "first arrivals out of order (earlier, later): {out_of_order:?}\nB:\n{}",
        b.log()
    );
}

/// `delivery.consumer_idle_secs` = 1: after a delivery the destination's consumer is
/// removed by nats-server; the next event creates it again and arrives within the
/// latency of a new event (the doorbell, one pull that finds no consumer, its creation
/// and a second pull: milliseconds; 1 s leaves room for a loaded debug build).
#[tokio::test]
async fn a_destination_idle_past_consumer_idle_secs_loses_its_consumer_and_gets_its_next_event() {
    const LATENCY: Duration = Duration::from_secs(1);
    let app = spawn_app_with(|cfg| {
        cfg.delivery.consumer_idle = Duration::from_secs(1);
        // Only the doorbell can wake the destination within the test.
        cfg.delivery.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    let receiver = Receiver::start().await;
    let destination = steps::create(
        &app,
        json!({"url": receiver.url("/idle"), "event_types": ["idle.*"]}),
    )
    .await;
    let js = jetstream::new(app.nats.client().await);
    let shard = js
        .get_stream(steps::delivery_shard(&destination))
        .await
        .expect("the destination's shard");
    let consumer = format!("dest_{destination}");
    for round in 0..2 {
        let posted = Instant::now();
        let id = steps::send(&app, json!({"type": "idle.ping", "data": {"round": round}})).await;
        let r = receiver
            .recv_timeout(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("round {round}: event {id} not delivered"));
        assert_eq!(r.header("webhook-id"), Some(id.as_str()));
        let latency = r.received_at.duration_since(posted);
        if round > 0 {
            assert!(
                latency <= LATENCY,
                "round {round}: {latency:?} to a destination whose consumer was removed"
            );
        }
        // Idle: the server removes the consumer; its deliveries (none) would stay.
        let deadline = Instant::now() + Duration::from_secs(15);
        while shard.consumer_info(&consumer).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "round {round}: the idle consumer was never removed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(steps::deliveries_waiting(&app, &destination).await, 0);
    }
}

/// The shard count is written when the shards are created; a later start with another
/// count refuses with a message naming the setting and the existing count.
#[tokio::test]
async fn a_different_shard_count_later_is_refused_with_the_existing_count() {
    let first = spawn_app_with(|cfg| cfg.events.delivery_shards = 4).await;
    let nats = first.nats.clone();
    let mut cfg = hookstream::config::Config::defaults();
    cfg.nats.url = Some(nats.url());
    cfg.api.listen = "127.0.0.1:0".to_string();
    cfg.events.delivery_shards = 8;
    let refused = tokio::time::timeout(Duration::from_secs(60), hookstream::app::App::build(cfg))
        .await
        .expect("the start ends");
    let err = match refused {
        Ok(_) => panic!("a start with another shard count was not refused"),
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    };
    assert!(
        err.contains("events.delivery_shards is 8") && err.contains("created with 4"),
        "{err}"
    );
    // The first app still works on its 4 shards.
    let again = spawn_app_on(&nats, |cfg| cfg.events.delivery_shards = 4).await;
    again.wait_ready().await;
}

/// An upgrade from the layout before routing: events a destination's old consumer on
/// `HS_EVENTS` still holds when the new version starts (no `hs_router` yet) are routed
/// to that destination, once each, and the old consumer is removed; later events go
/// through the router.
#[tokio::test]
async fn an_old_per_destination_consumer_is_drained_into_the_shards_and_removed() {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let receiver = Receiver::start().await;
    let (nats, destination, js, events) = stopped_with_destination(&receiver, "/up", "up.*").await;
    // The layout before routing: no router, a consumer per destination with its filters.
    events
        .delete_consumer("hs_router_all")
        .await
        .expect("router consumer removed");
    let old = format!("dest_{destination}");
    events
        .create_consumer(pull::Config {
            durable_name: Some(old.clone()),
            filter_subjects: vec![
                "hs.ev.default.up.*".into(),
                format!("hs.to.{destination}.>"),
            ],
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("old consumer");
    // Events stored while the old version was down: only the old consumer holds them.
    let mut held = Vec::new();
    for (i, event_type) in ["up.a", "other.x", "up.b", "up.c"].iter().enumerate() {
        let id = format!("old-{i}");
        publish_event(&js, &id, event_type).await;
        if event_type.starts_with("up.") {
            held.push(id);
        }
    }

    let second = spawn_app_on(&nats, |_| {}).await;
    let got = receiver.collect(held.len(), Duration::from_secs(20)).await;
    let mut ids: Vec<String> = got
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_string))
        .collect();
    ids.sort();
    assert_eq!(ids, held, "each held event once, nothing else");
    let deadline = Instant::now() + Duration::from_secs(15);
    while events.consumer_info(&old).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the old consumer was never removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // From now on the router routes.
    let id = steps::send(&second, json!({"type": "up.new", "data": {}})).await;
    let r = receiver
        .recv_timeout(Duration::from_secs(10))
        .await
        .expect("a new event after the upgrade");
    assert_eq!(r.header("webhook-id"), Some(id.as_str()));
    assert!(
        receiver
            .recv_timeout(Duration::from_secs(1))
            .await
            .is_none(),
        "nothing delivered twice"
    );
}

/// An upgrade from a version whose router consumer was `hs_router` with explicit acks
/// (docs/adr/0019): the new version creates `hs_router_all` (ack policy all) right after
/// the old one's ack floor and removes the old one. The events the old router held
/// unacked (its replica stopped) are routed, also those it had acked above its floor
/// (routed again with the same ids; here they were not routed before, so they arrive).
#[tokio::test]
async fn the_explicit_router_consumer_of_an_earlier_version_is_replaced_below_what_it_held() {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    use futures::StreamExt;
    let receiver = Receiver::start().await;
    let (nats, _, js, events) = stopped_with_destination(&receiver, "/up", "legacy.*").await;
    events
        .delete_consumer("hs_router_all")
        .await
        .expect("router consumer removed");
    let legacy: jetstream::consumer::PullConsumer = events
        .create_consumer(pull::Config {
            durable_name: Some("hs_router".into()),
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(6),
            ..Default::default()
        })
        .await
        .expect("the earlier version's router consumer");
    let mut wanted = Vec::new();
    for i in 0..10 {
        let id = format!("legacy-{i}");
        publish_event(&js, &id, "legacy.x").await;
        wanted.push(id);
    }
    // The old router pulled eight of them and acked two above its floor, then stopped
    // (its pinned group left out here: only its acks matter).
    let mut batch = legacy
        .batch()
        .max_messages(8)
        .messages()
        .await
        .expect("pull");
    let mut pulled = 0;
    while let Some(msg) = batch.next().await {
        let msg = msg.expect("message");
        pulled += 1;
        if pulled == 4 || pulled == 5 {
            msg.ack().await.expect("ack");
        }
        if pulled == 8 {
            break;
        }
    }
    assert_eq!(pulled, 8);

    let _second = spawn_app_on(&nats, |_| {}).await;
    let got = receiver
        .collect(wanted.len(), Duration::from_secs(20))
        .await;
    let mut ids: Vec<String> = got
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_string))
        .collect();
    ids.sort();
    assert_eq!(
        ids, wanted,
        "every event the old router had not settled, once"
    );
    assert!(
        events.consumer_info("hs_router").await.is_err(),
        "the old router consumer is removed"
    );
    let info = events
        .consumer_info("hs_router_all")
        .await
        .expect("the new router consumer");
    assert_eq!(info.config.ack_policy, AckPolicy::All);
}

/// An event deleted from `HS_EVENTS` before it was routed leaves a gap in the router's
/// sequence that nobody will fill: the router finds it empty and routes on (a router
/// that waited for the gap to fill would deliver nothing after it; docs/adr/0019).
#[tokio::test]
async fn a_deleted_event_does_not_stop_the_router_at_its_gap() {
    let receiver = Receiver::start().await;
    let (nats, _, js, events) = stopped_with_destination(&receiver, "/gap", "gap.*").await;
    let mut seqs = Vec::new();
    for i in 0..6 {
        seqs.push(publish_event(&js, &format!("gap-{i}"), "gap.x").await);
    }
    for i in [2, 3] {
        events.delete_message(seqs[i]).await.expect("event deleted");
    }
    let _second = spawn_app_on(&nats, |_| {}).await;
    let got = receiver.collect(4, Duration::from_secs(20)).await;
    let mut ids: Vec<String> = got
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_string))
        .collect();
    ids.sort();
    assert_eq!(ids, ["gap-0", "gap-1", "gap-4", "gap-5"]);
}

/// A destination without a consumer (nothing was ever routed to it) can be paused and
/// resumed: a change of a destination touches its consumer only if it has one. What is
/// routed while it is paused waits in its shard and is delivered on resume.
#[tokio::test]
async fn a_destination_without_a_consumer_pauses_and_its_deliveries_wait() {
    let app = spawn_app_with(|_| {}).await;
    let receiver = Receiver::start().await;
    let destination = steps::create(
        &app,
        json!({"url": receiver.url("/p"), "event_types": ["p.*"]}),
    )
    .await;
    steps::act(&app, &destination, "pause").await;
    let id = steps::send(&app, json!({"type": "p.x", "data": {}})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while steps::deliveries_waiting(&app, &destination).await == 0 {
        assert!(Instant::now() < deadline, "the event was never routed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        receiver
            .recv_timeout(Duration::from_secs(1))
            .await
            .is_none(),
        "sent while paused"
    );
    steps::act(&app, &destination, "resume").await;
    let r = receiver
        .recv_timeout(Duration::from_secs(10))
        .await
        .expect("delivered after resume");
    assert_eq!(r.header("webhook-id"), Some(id.as_str()));
}

/// A paused destination at `events.delivery_max_per_destination` deliveries waiting: its
/// next deliveries go to the DLQ with reason `backlog_full` (nothing lost), routing goes
/// on for a healthy destination of the same events, and after the pause the waiting ones
/// are delivered and the dead-lettered ones replay.
#[tokio::test]
async fn a_destination_at_its_backlog_limit_dead_letters_the_rest_and_routing_goes_on() {
    const LIMIT: usize = 5;
    const EVENTS: usize = 9;
    let app = spawn_app_with(|cfg| cfg.events.delivery_max_per_destination = LIMIT as i64).await;
    let paused_rx = Receiver::start().await;
    let healthy_rx = Receiver::start().await;
    let paused = steps::create(
        &app,
        json!({"url": paused_rx.url("/p"), "event_types": ["q.*"]}),
    )
    .await;
    steps::create(
        &app,
        json!({"url": healthy_rx.url("/h"), "event_types": ["q.*"]}),
    )
    .await;
    steps::act(&app, &paused, "pause").await;
    // One at a time, so that the healthy destination's own backlog stays under the limit:
    // it gets every event while the paused one is past its limit (routing never stopped).
    let mut sent = Vec::new();
    for n in 0..EVENTS {
        let id = steps::send(&app, json!({"type": "q.x", "data": {"n": n}})).await;
        let r = healthy_rx
            .recv_timeout(Duration::from_secs(15))
            .await
            .expect("the healthy destination got every event");
        assert_eq!(r.header("webhook-id"), Some(id.as_str()));
        sent.push(id);
    }
    assert_eq!(steps::deliveries_waiting(&app, &paused).await, LIMIT as u64);
    // The rest is in the DLQ, each with its reason.
    let deadline = Instant::now() + Duration::from_secs(15);
    let letters = loop {
        let (status, page) = app
            .get(&format!("/v1/dlq?destination_id={paused}&limit=100"))
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{page}");
        let letters = page["data"].as_array().expect("data").clone();
        if letters.len() >= EVENTS - LIMIT {
            break letters;
        }
        assert!(Instant::now() < deadline, "dead letters: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(letters.len(), EVENTS - LIMIT, "{letters:?}");
    let mut lettered: Vec<String> = letters
        .iter()
        .map(|l| {
            assert_eq!(l["reason"], "backlog_full", "{l}");
            l["event_id"].as_str().expect("event_id").to_string()
        })
        .collect();
    lettered.sort();
    let mut expected = sent[LIMIT..].to_vec();
    expected.sort();
    assert_eq!(lettered, expected, "the events past the limit");
    // Resumed: the waiting ones arrive, then the replayed ones; nothing else.
    steps::act(&app, &paused, "resume").await;
    let mut arrived = Vec::new();
    for _ in 0..LIMIT {
        let r = paused_rx
            .recv_timeout(Duration::from_secs(15))
            .await
            .expect("the waiting deliveries after resume");
        arrived.push(r.header("webhook-id").expect("webhook-id").to_string());
    }
    // Not an ordered destination: the waiting ones are sent concurrently.
    arrived.sort();
    let mut waiting = sent[..LIMIT].to_vec();
    waiting.sort();
    assert_eq!(arrived, waiting);
    // Replayed once the backlog is gone (acked), fewer than the limit: all are taken.
    let deadline = Instant::now() + Duration::from_secs(10);
    while steps::deliveries_waiting(&app, &paused).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the delivered backlog was never acked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = app
        .post("/v1/dlq/replay", json!({"destination_id": paused}))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let mut replayed = HashSet::new();
    for _ in 0..EVENTS - LIMIT {
        let r = paused_rx
            .recv_timeout(Duration::from_secs(15))
            .await
            .expect("the replayed deliveries");
        replayed.insert(r.header("webhook-id").expect("webhook-id").to_string());
    }
    assert_eq!(
        replayed,
        sent[LIMIT..].iter().cloned().collect::<HashSet<_>>()
    );
    assert!(
        paused_rx
            .recv_timeout(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing more"
    );
}

/// A destination consumer made with file state (by the version before memory state) is
/// replaced, not refused, when the destination changes: nats-server cannot change a
/// consumer's storage type in place. Its deliveries stay and arrive.
#[tokio::test]
async fn a_consumer_with_file_state_is_replaced_by_one_with_memory_state() {
    let app = spawn_app_with(|_| {}).await;
    let receiver = Receiver::start().await;
    let destination = steps::create(
        &app,
        json!({"url": receiver.url("/m"), "event_types": ["m.*"]}),
    )
    .await;
    let js = jetstream::new(app.nats.client().await);
    let shard_name = steps::delivery_shard(&destination);
    let k = shard_name.trim_start_matches("HS_DLV_").to_string();
    let shard = js.get_stream(&shard_name).await.expect("shard");
    let consumer = format!("dest_{destination}");
    steps::act(&app, &destination, "pause").await;
    // As the earlier version made it: file state.
    let _ = shard.delete_consumer(&consumer).await;
    shard
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(consumer.clone()),
            filter_subject: format!("hs.dlv.{k}.{destination}"),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            memory_storage: false,
            ..Default::default()
        })
        .await
        .expect("file-state consumer");
    let id = steps::send(&app, json!({"type": "m.x", "data": {}})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while steps::deliveries_waiting(&app, &destination).await == 0 {
        assert!(Instant::now() < deadline, "never routed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    steps::act(&app, &destination, "resume").await;
    let r = receiver
        .recv_timeout(Duration::from_secs(10))
        .await
        .expect("delivered through the replaced consumer");
    assert_eq!(r.header("webhook-id"), Some(id.as_str()));
    let info = shard.consumer_info(&consumer).await.expect("consumer");
    assert!(info.config.memory_storage, "{:?}", info.config);
}

/// The first version of an upgrade: an app that created one destination (`pattern`, at
/// `path` of `receiver`) and stopped. Its nats-server, the destination's id, and
/// `HS_EVENTS`.
async fn stopped_with_destination(
    receiver: &Receiver,
    path: &str,
    pattern: &str,
) -> (
    std::sync::Arc<NatsServer>,
    String,
    jetstream::Context,
    jetstream::stream::Stream,
) {
    let mut first = spawn_app_with(|_| {}).await;
    let destination = steps::create(
        &first,
        json!({"url": receiver.url(path), "event_types": [pattern]}),
    )
    .await;
    first.stop().await;
    let nats = first.nats.clone();
    let js = jetstream::new(nats.client().await);
    let events = js.get_stream("HS_EVENTS").await.expect("HS_EVENTS");
    (nats, destination, js, events)
}

/// An event `id` of `event_type` published straight on NATS, as a producer does; its
/// `HS_EVENTS` sequence.
async fn publish_event(js: &jetstream::Context, id: &str, event_type: &str) -> u64 {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    headers.insert("Hs-Tenant", "default");
    let body = json!({"id": id, "tenant": "default", "type": event_type,
        "received_at": "2026-01-01T00:00:00Z", "data": {}});
    js.publish_with_headers(
        format!("hs.ev.default.{event_type}"),
        headers,
        body.to_string().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored")
    .sequence
}
