//! Pulling only where there is work (docs/adr/0001) at scale and at rest: 2,000
//! destinations each get exactly their own events; a destination silent for a while is
//! woken by the signal alone, within the documented latency; and what a SIGKILLed replica
//! held unacknowledged is delivered by the replica that is still running, through its sweep.
//! The last test shows an open bug: a destination allowed more deliveries in flight than a
//! worker runs in all is never drained (it fails until that is fixed).
//!
//! (A paused destination costing no pulls and draining on resume is tested in
//! destinations.rs, `paused_destination_holds_its_events_until_resumed`.)

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::seen::Seen;
use crate::common::steps::assert_quiet;
use crate::common::{NatsServer, Receiver, ServiceProcess, TestApp, spawn_app_with, steps};

/// How long we listen after the last expected request to show that nothing more arrives.
const QUIET: Duration = Duration::from_secs(1);

/// Posts `events` as one `POST /v1/events/batch`; every item must be answered 202 with
/// the id it was given.
async fn send_batch(app: &TestApp, events: &[Value]) {
    let (status, answer) = app.post_batch(json!({ "events": events })).await;
    assert_eq!(status, StatusCode::OK, "batch: {answer}");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), events.len(), "one result per item");
    for (event, result) in events.iter().zip(results) {
        assert_eq!(result["status"], 202, "{event}: {result}");
        assert_eq!(result["id"], event["id"], "{event}: {result}");
    }
}

/// Each destination `i` subscribes to `scale.d<i>` only and has its own path `/d/<i>`.
/// Every event, including a second one for every tenth destination, must arrive at its
/// destination's path exactly once, with its own id, type and data; events of types
/// nobody subscribed to (some of them near misses of the subscribed ones) go nowhere.
#[tokio::test]
async fn two_thousand_destinations_each_get_exactly_their_own_events() {
    const DESTINATIONS: usize = 2_000;
    const BATCH: usize = 1_000; // events.max_batch
    let started = Instant::now();
    // No sweep within the test: every event must be found through its signal (ADR 0001),
    // including when the signal overtakes the consumer's own count of new messages.
    let mut app =
        spawn_app_with(|cfg| cfg.delivery.sweep_interval = Duration::from_secs(3600)).await;
    let receiver = Receiver::start().await;
    // Slow enough that deliveries to many destinations overlap.
    receiver.set_delay(Duration::from_millis(20));

    let created: Vec<String> = futures::stream::iter(0..DESTINATIONS)
        .map(|i| {
            let destination = json!({
                "url": receiver.url(&format!("/d/{i}")),
                "event_types": [format!("scale.d{i}")],
            });
            let app = &app;
            async move { steps::create(app, destination).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(
        created.iter().collect::<HashSet<_>>().len(),
        DESTINATIONS,
        "distinct destination ids"
    );
    let created_in = started.elapsed();

    // Event ids we choose, so the test knows each one before the answer.
    let event = |i: usize, n: usize| {
        json!({
            "id": format!("scale-{i}-{n}"),
            "type": format!("scale.d{i}"),
            "data": {"i": i, "n": n},
        })
    };
    let mut expected: BTreeMap<usize, HashSet<String>> = BTreeMap::new();
    let mut events: Vec<Value> = Vec::new();
    for i in 0..DESTINATIONS {
        events.push(event(i, 0));
        if i % 10 == 0 {
            events.push(event(i, 1));
        }
    }
    for e in &events {
        let i = e["data"]["i"].as_u64().expect("i") as usize;
        let id = e["id"].as_str().expect("id").to_string();
        expected.entry(i).or_default().insert(id);
    }
    let expected_total = events.len();
    // Types nobody subscribed to, near misses included: a token more, a token less,
    // one index too many, a leading zero, another first token.
    let strays: Vec<Value> = [
        "scale.nobody",
        "scale",
        "scale.d1.extra",
        "scale.d2000",
        "scale.d01",
        "other.d1",
    ]
    .iter()
    .enumerate()
    .map(|(n, t)| json!({"id": format!("stray-{n}"), "type": t, "data": {"stray": n}}))
    .collect();
    let mut all = events.clone();
    // Strays in the middle of the traffic, not after it.
    all.splice(BATCH / 2..BATCH / 2, strays.iter().cloned());

    let sending = Instant::now();
    for chunk in all.chunks(BATCH) {
        send_batch(&app, chunk).await;
    }
    let sent_in = sending.elapsed();

    let requests = receiver
        .collect(expected_total, Duration::from_secs(60))
        .await;
    let delivered_in = sending.elapsed();
    let mut got: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for request in &requests {
        let path_i = request
            .uri
            .strip_prefix("/d/")
            .and_then(|i| i.parse::<usize>().ok());
        let id = request.header("webhook-id").unwrap_or_default().to_string();
        let body = request.json();
        let own = path_i.is_some_and(|i| {
            body["type"] == format!("scale.d{i}")
                && body["data"]["i"] == i
                && body["id"] == id.as_str()
                && request.header("hs-event-type") == Some(format!("scale.d{i}").as_str())
                && expected.get(&i).is_some_and(|ids| ids.contains(&id))
        });
        if own {
            got.entry(path_i.expect("checked")).or_default().push(id);
        } else {
            wrong.push(format!(
                "{} webhook-id={id} body={}",
                request.uri,
                String::from_utf8_lossy(&request.body)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} requests at the wrong path or with the wrong event, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    let missing: Vec<(usize, Vec<&String>)> = expected
        .iter()
        .filter_map(|(i, ids)| {
            let got = got.get(i).map(Vec::as_slice).unwrap_or_default();
            let lost: Vec<&String> = ids.iter().filter(|id| !got.contains(*id)).collect();
            (!lost.is_empty()).then_some((*i, lost))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {DESTINATIONS} destinations did not get all their events within 60 s \
         ({} of {expected_total} requests arrived), e.g. {:?}",
        missing.len(),
        requests.len(),
        &missing[..missing.len().min(10)]
    );
    let repeated: Vec<(&usize, &Vec<String>)> = got
        .iter()
        .filter(|(_, ids)| ids.len() != ids.iter().collect::<HashSet<_>>().len())
        .collect();
    assert!(
        repeated.is_empty(),
        "events delivered twice: {:?}",
        &repeated[..repeated.len().min(10)]
    );
    assert_eq!(requests.len(), expected_total, "requests in all");
    // Anything later is an extra: a duplicate or a stray.
    assert_quiet(receiver.recv_timeout(QUIET).await, "after every event");
    eprintln!(
        "scale: {DESTINATIONS} destinations created in {created_in:?}; {expected_total} events \
         (+{} strays) accepted in {sent_in:?}, all delivered {delivered_in:?} after the first \
         batch; {:?} in all; at most {} requests open at once",
        strays.len(),
        started.elapsed(),
        receiver.max_concurrent()
    );
    // With 2,000 destinations the graceful shutdown still finishes (within 30 s, cleanly).
    app.stop().await;
}

/// Time from posting an event to its arrival at the receiver, for a destination that was
/// idle before it. ADR 0001: "latency of a new event is the signal's latency plus one pull
/// round trip" — milliseconds on an idle machine. 1 s leaves room for a debug build on a
/// loaded 2-core machine, and is far below any fallback: with the sweep set to an hour and
/// no retry pending, only the signal can wake the destination.
const NEW_EVENT_LATENCY: Duration = Duration::from_secs(1);
/// Long enough for the destination's drain task to end and the destination to go idle
/// (no task, no pull) before the next event.
const SILENCE: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_silent_destination_gets_a_new_event_within_the_documented_latency() {
    let app = spawn_app_with(|cfg| cfg.delivery.sweep_interval = Duration::from_secs(3600)).await;
    let receiver = Receiver::start().await;
    steps::create(
        &app,
        json!({"url": receiver.url("/quiet"), "event_types": ["quiet.*"]}),
    )
    .await;
    let warm_up = steps::send(&app, json!({"type": "quiet.warm_up", "data": {}})).await;
    let first = receiver
        .recv_timeout(Duration::from_secs(10))
        .await
        .expect("the first event is delivered");
    assert_eq!(first.header("webhook-id"), Some(warm_up.as_str()));

    let mut latencies = Vec::new();
    for round in 1..=3 {
        // The silence doubles as a check that nothing else arrives.
        assert_quiet(
            receiver.recv_timeout(SILENCE / 2).await,
            &format!("round {round}, while silent"),
        );
        // Idle means no pulls at all: nothing polls a destination without work.
        let pulls_before = app.scrape().await.value("hookstream_pulls_total", &[]);
        assert_quiet(
            receiver.recv_timeout(SILENCE / 2).await,
            &format!("round {round}, while silent"),
        );
        let pulls_idle = app.scrape().await.value("hookstream_pulls_total", &[]);
        assert_eq!(
            pulls_idle, pulls_before,
            "round {round}: pull requests for an idle destination"
        );

        let posted = Instant::now();
        let id = steps::send(
            &app,
            json!({"type": "quiet.ping", "data": {"round": round}}),
        )
        .await;
        let request = receiver
            .recv_timeout(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("round {round}: event {id} not delivered within 10 s"));
        let latency = request.received_at.duration_since(posted);
        assert_eq!(
            request.header("webhook-id"),
            Some(id.as_str()),
            "round {round}"
        );
        assert_eq!(request.uri, "/quiet");
        assert_eq!(request.json()["data"]["round"], round);
        latencies.push(latency);
        assert!(
            latency <= NEW_EVENT_LATENCY,
            "round {round}: event delivered {latency:?} after it was posted to an idle \
             destination (bound {NEW_EVENT_LATENCY:?}: the signal plus one pull round trip)"
        );
    }
    assert_quiet(receiver.recv_timeout(QUIET).await, "after the last event");
    eprintln!("silent destination: post-to-receipt latencies {latencies:?}");
}

/// Ack wait = the destination's timeout (4 s) + the margin (1 s, the configured minimum).
/// B delivers what is left in about 2 s, before A's unacknowledged events become
/// redeliverable, so B is idle by then and only its sweep (every 300 ms) can find them
/// (ADR 0001). With `SWEEP_INTERVAL_MS` set to an hour this test fails.
const ACK_WAIT_MARGIN_MS: &str = "1000";
const TIMEOUT_MS: u64 = 4_000;
const SWEEP_INTERVAL_MS: &str = "300";
/// Each delivery takes this long at the receiver, so both replicas have some in flight.
const RECEIVER_DELAY: Duration = Duration::from_millis(100);
/// Deliveries in flight per replica (`max_in_flight_total`), and the most one pull asks
/// for (`pull_batch`, which must not exceed it: see the bug in the last test of this
/// file). The destination allows 32, so B alone never has more than this open, and more
/// open at the receiver means some are A's.
const PER_REPLICA: usize = 8;

#[tokio::test]
async fn unacked_events_of_a_sigkilled_replica_are_delivered_by_the_other_replica() {
    // The kill must catch A with requests open; when it does not, the scenario runs again.
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        const EVENTS: usize = 200;
        let nats = NatsServer::start().await;
        let receiver = Receiver::start().await;
        receiver.set_delay(RECEIVER_DELAY);
        let per_replica = PER_REPLICA.to_string();
        let env = [
            (
                "HOOKSTREAM_DELIVERY__ACK_WAIT_MARGIN_MS",
                ACK_WAIT_MARGIN_MS,
            ),
            ("HOOKSTREAM_DELIVERY__SWEEP_INTERVAL_MS", SWEEP_INTERVAL_MS),
            (
                "HOOKSTREAM_DELIVERY__MAX_IN_FLIGHT_TOTAL",
                per_replica.as_str(),
            ),
            ("HOOKSTREAM_DELIVERY__PULL_BATCH", per_replica.as_str()),
            // Each replica holds at most PER_REPLICA requests open, however slow they get on
            // a loaded machine: more than that open at once means both replicas have some.
            ("HOOKSTREAM_DELIVERY__SLOW_DELIVERY_MS", "0"),
        ];
        let mut a = ServiceProcess::spawn(&nats.url(), &env).await;
        let b = ServiceProcess::spawn(&nats.url(), &env).await;
        let (status, created) = a
            .post(
                "/v1/destinations",
                &json!({
                    "url": receiver.url("/hook"),
                    "event_types": ["order.*"],
                    "timeout_ms": TIMEOUT_MS,
                    "max_in_flight": 32,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create destination: {created}");
        let destination = created["id"].as_str().expect("destination id");

        // Half the events through each replica; all accepted before anything is killed.
        let mut accepted = HashSet::new();
        for (n, service) in [&a, &b].into_iter().enumerate() {
            let events: Vec<Value> = (0..EVENTS / 2)
                .map(|k| {
                    let i = n * EVENTS / 2 + k;
                    json!({"id": format!("kill-{i}"), "type": "order.created", "data": {"i": i}})
                })
                .collect();
            let (status, answer) = service
                .post("/v1/events/batch", &json!({ "events": events }))
                .await;
            assert_eq!(status, StatusCode::OK, "batch: {answer}");
            let results = answer["results"].as_array().expect("results");
            assert_eq!(results.len(), events.len(), "one result per item");
            for (event, result) in events.iter().zip(results) {
                assert_eq!(result["status"], 202, "{event}: {result}");
                accepted.insert(event["id"].as_str().expect("id").to_string());
            }
        }
        assert_eq!(accepted.len(), EVENTS);

        // Kill A once some events were delivered, while both replicas have requests open:
        // more than one replica's worth.
        let mut seen = Seen::default();
        let deadline = Instant::now() + Duration::from_secs(20);
        while receiver.open_requests() <= PER_REPLICA || seen.requests() < 3 * PER_REPLICA {
            assert!(
                Instant::now() < deadline,
                "never more than {PER_REPLICA} requests open at once after {} received; log of A:\n{}",
                seen.requests(),
                a.log()
            );
            seen.take(&receiver).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let open_at_kill = receiver.open_requests();
        a.kill9();
        let killed_at = Instant::now();
        seen.take(&receiver).await;
        let received_at_kill = seen.requests();
        // A's connections closed with it and the receiver keeps the requests left unanswered.
        // B abandons none: its timeout is 4 s and the receiver answers in 100 ms.
        let abandoned = loop {
            let aborted = receiver.aborted_requests();
            if !aborted.is_empty() || killed_at.elapsed() > Duration::from_secs(2) {
                break aborted;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if abandoned.is_empty() && attempt < ATTEMPTS {
            // A held no request at the kill: the requests open then were all B's (B's late
            // pull answers are delivered outside its budget, so B alone can hold more than
            // PER_REPLICA). The kill tested nothing; run the scenario again on fresh parts.
            eprintln!(
                "sigkill: attempt {attempt}: {open_at_kill} open at the kill, none of them A's; again"
            );
            continue;
        }
        assert!(
            !abandoned.is_empty(),
            "no request was left unanswered by A's death in {ATTEMPTS} attempts ({open_at_kill} open at the last kill)"
        );

        // Delivered means answered: an id counts once it has more requests than abandoned
        // ones. Ack wait (5 s) + B's sweep (300 ms); 30 s is generous for a loaded machine
        // and far below anything that needs a new process.
        let abandoned_ids: Vec<String> = abandoned
            .iter()
            .map(|r| r.header("webhook-id").expect("webhook-id").to_string())
            .collect();
        let unanswered = |seen: &Seen| -> Vec<String> {
            let mut ids: Vec<String> = accepted
                .iter()
                .filter(|id| {
                    let abandoned = abandoned_ids.iter().filter(|a| a == id).count();
                    seen.count(id) <= abandoned
                })
                .cloned()
                .collect();
            ids.sort();
            ids
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut recovered_at = killed_at;
        while !unanswered(&seen).is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(request) = receiver.recv_timeout(left).await else {
                let missing = unanswered(&seen);
                panic!(
                    "{} of {EVENTS} accepted events never answered within 30 s of killing A: {:?}…\n\
                     log of B:\n{}",
                    missing.len(),
                    &missing[..missing.len().min(20)],
                    b.log()
                );
            };
            seen.add(&request);
            recovered_at = request.received_at;
        }
        let recovered_in = recovered_at.duration_since(killed_at);
        // Late duplicates count too.
        while let Some(request) = receiver.recv_timeout(QUIET).await {
            seen.add(&request);
        }
        let strangers = seen.ids_not_in(&accepted);
        assert!(
            strangers.is_empty(),
            "unexpected webhook ids: {strangers:?}"
        );
        assert_eq!(
            receiver.aborted_requests().len(),
            abandoned.len(),
            "B abandoned requests too"
        );

        // The consumer counts every time it hands a message to a worker, redeliveries
        // included. Receivers answered 200 and nothing was nak'd (no rate limit, no circuit),
        // so every hand-out beyond one per event is a message A held unacknowledged when it
        // died, handed to B after the ack wait.
        let js = async_nats::jetstream::new(nats.client().await);
        let info = js
            .get_stream(crate::common::steps::delivery_shard(destination))
            .await
            .expect("the destination's delivery shard")
            .consumer_info(format!("dest_{destination}"))
            .await
            .expect("the destination's consumer");
        let handed_out = info.delivered.consumer_sequence as usize;
        eprintln!(
            "sigkill: A killed after {received_at_kill} requests, {open_at_kill} open at the \
             receiver, {} of them A's; the consumer handed out {handed_out} messages for {EVENTS} \
             events; every event answered {recovered_in:?} after the kill; {} requests in all, \
             {} duplicates",
            abandoned.len(),
            seen.requests(),
            seen.duplicates(),
        );
        assert!(
            handed_out > EVENTS,
            "the consumer handed out {handed_out} messages for {EVENTS} events: nothing was \
             redelivered after A died"
        );
        assert_eq!(info.num_ack_pending, 0, "messages left unacknowledged");
        assert_eq!(info.num_pending, 0, "messages never handed out");
        return;
    }
}

/// A worker runs at most `delivery.max_in_flight_total` deliveries at once, whatever the
/// destinations allow: a destination whose `max_in_flight` is above it must still be
/// drained, just no more than that many at a time.
///
/// BUG (found by this test, open): the drain loop (`delivery/dispatcher.rs`,
/// `drain_once`) sizes a pull by the destination's free slots, capped by `pull_batch`
/// but not by the worker's budget, then waits for that many permits with
/// `permits.acquire_many_owned(want)` on a semaphore of `max_in_flight_total` permits.
/// When `want` exceeds the semaphore's size that wait never ends: the destination's task
/// hangs before its pull, and since it stays "active", signals and sweeps only add to its
/// hint. Its events are never delivered by that worker. Reached whenever
/// `max_in_flight_total` is below `min(max_in_flight, pull_batch)` of a destination with
/// a backlog; the defaults (1,024 vs. 256) do not reach it, and config validation does
/// not refuse it.
#[tokio::test]
async fn a_destination_allowed_more_in_flight_than_the_worker_total_is_still_delivered() {
    const EVENTS: usize = 40;
    const WORKER_TOTAL: usize = 4;
    let app = spawn_app_with(|cfg| cfg.delivery.max_in_flight_total = WORKER_TOTAL).await;
    let receiver = Receiver::start().await;
    // Slow enough that a backlog builds up behind the first deliveries.
    receiver.set_delay(Duration::from_millis(50));
    steps::create(
        &app,
        json!({"url": receiver.url("/cap"), "event_types": ["cap.*"], "max_in_flight": 8}),
    )
    .await;
    let events: Vec<Value> = (0..EVENTS)
        .map(|i| json!({"id": format!("cap-{i}"), "type": "cap.made", "data": {"i": i}}))
        .collect();
    send_batch(&app, &events).await;

    let requests = receiver.collect(EVENTS, Duration::from_secs(20)).await;
    let got: HashSet<&str> = requests
        .iter()
        .filter_map(|r| r.header("webhook-id"))
        .collect();
    let missing: Vec<String> = (0..EVENTS)
        .map(|i| format!("cap-{i}"))
        .filter(|id| !got.contains(id.as_str()))
        .collect();
    if !missing.is_empty() {
        let pulls = app.scrape().await.value("hookstream_pulls_total", &[]);
        let (_, stats) = app.get("/v1/stats").await;
        panic!(
            "{} of {EVENTS} events not delivered within 20 s ({pulls} pulls in all; stats: \
             {stats}); missing {:?}…",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    }
    assert_eq!(requests.len(), EVENTS, "each event once");
    assert!(
        receiver.max_concurrent() <= WORKER_TOTAL,
        "{} deliveries at once; the worker's total is {WORKER_TOTAL}",
        receiver.max_concurrent()
    );
    assert_quiet(receiver.recv_timeout(QUIET).await, "after every event");
}
