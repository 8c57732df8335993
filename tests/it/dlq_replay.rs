//! Working with dead letters: list them with filters, replay them to their destination
//! only (each once, fresh attempts, same `webhook-id`, trace kept), through a crash of
//! the service mid-replay; refuse replays to deleted or disabled destinations; delete
//! and purge; resend a delivered event; and the `hookstream dlq` CLI.
//!
//! Dead letters are counted and read with a plain async-nats client, not through the
//! API under test.

use std::collections::{BTreeSet, HashSet};
use std::process::Output;
use std::time::Duration;

use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::common::app::send;
use crate::common::steps::{assert_quiet, create, eventually};
use crate::common::{NatsServer, Receiver, ServiceProcess, TestApp, spawn_app};

const TIMEOUT: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(700);

/// Two attempts 50 ms apart, then the dead-letter queue.
fn dies_fast() -> Value {
    json!({"schedule_ms": [50], "max_attempts": 2})
}

/// Posts the events as one batch (with an optional traceparent); all must be accepted.
async fn post_batch(app: &TestApp, events: Vec<Value>, traceparent: Option<&str>) {
    let mut request = app
        .client
        .post(format!("{}/v1/events/batch", app.base_url()))
        .header(CONTENT_TYPE, "application/json")
        .body(json!({ "events": events }).to_string());
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    let (status, body) = send(request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for item in body["results"].as_array().expect("results") {
        assert_eq!(item["status"], 202, "{item}");
    }
}

fn events(prefix: &str, event_type: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("{prefix}-{i}"), "type": event_type, "data": {"i": i}}))
        .collect()
}

fn ids(prefix: &str, n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Dead letters on `subject` (wildcards allowed), counted by the server.
async fn dlq_count(nats: &NatsServer, subject: &str) -> usize {
    count_on(nats, "HS_DLQ", subject).await
}

/// Messages of `stream` on `subject` (wildcards allowed), counted by the server.
async fn count_on(nats: &NatsServer, stream: &str, subject: &str) -> usize {
    let stream = jetstream::new(nats.client().await)
        .get_stream(stream)
        .await
        .expect("stream exists");
    let subjects: Vec<(String, usize)> = stream
        .info_with_subjects(subject)
        .await
        .expect("stream info")
        .try_collect()
        .await
        .expect("stream subjects");
    subjects.iter().map(|(_, n)| n).sum()
}

async fn wait_dlq_count(nats: &NatsServer, subject: &str, n: usize) {
    eventually(TIMEOUT, async || match dlq_count(nats, subject).await {
        count if count == n => Ok(()),
        count => Err(format!("{subject}: {count} dead letters, expected {n}")),
    })
    .await
}

/// Event ids in the bodies of every message on `subject` of `stream`.
async fn event_ids_on(nats: &NatsServer, stream: &str, subject: &str) -> Vec<String> {
    let stream = jetstream::new(nats.client().await)
        .get_stream(stream)
        .await
        .expect("stream exists");
    let mut out = Vec::new();
    let mut next = 1;
    loop {
        match stream
            .direct_get_next_for_subject(subject, Some(next))
            .await
        {
            Ok(message) => {
                next = message.sequence + 1;
                let body: Value = serde_json::from_slice(&message.payload).expect("JSON body");
                out.push(body["id"].as_str().expect("event id").to_string());
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => return out,
            Err(e) => panic!("reading {subject}: {e}"),
        }
    }
}

/// Every dead letter of `query` through `GET /v1/dlq`, page by page: (id, event id).
async fn list_all(app: &TestApp, query: &str, limit: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/v1/dlq?limit={limit}&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        for letter in page["data"].as_array().expect("data") {
            out.push((
                letter["id"].as_u64().expect("numeric id"),
                letter["event_id"].as_str().expect("event id").to_string(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
    panic!("{query}: the cursor never ended");
}

async fn listed_events(app: &TestApp, query: &str) -> BTreeSet<String> {
    list_all(app, query, 100)
        .await
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[tokio::test]
async fn replay_by_destination_delivers_each_dead_letter_once_to_that_destination_only() {
    let app = spawn_app().await;
    let down = Receiver::start().await;
    down.set_status(500);
    let other = Receiver::start().await;
    let failing = create(
        &app,
        json!({"url": down.url("/down"), "event_types": ["order.*"], "retry": dies_fast()}),
    )
    .await;
    create(
        &app,
        json!({"url": other.url("/up"), "event_types": ["order.*"]}),
    )
    .await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    post_batch(&app, events("r", "order.created", 500), Some(traceparent)).await;
    let expected = ids("r", 500);

    assert_eq!(
        other.collect(500, TIMEOUT).await.len(),
        500,
        "the healthy destination"
    );
    let dlq_subject = format!("hs.dlq.default.{failing}");
    wait_dlq_count(&app.nats, &dlq_subject, 500).await;
    assert_eq!(down.drain().await.len(), 1000, "two attempts each");

    // The receiver is back; replay what its destination missed.
    down.set_status(200);
    let (status, answer) = app
        .post("/v1/dlq/replay", json!({"destination_id": failing}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["matched"], 500, "{answer}");
    assert_eq!(answer["replayed"], 500, "{answer}");
    assert_eq!(answer["next_cursor"], Value::Null, "{answer}");

    let requests = down.collect(500, TIMEOUT).await;
    assert_eq!(requests.len(), 500, "every dead letter delivered");
    let mut seen = HashSet::new();
    for r in &requests {
        let id = r.header("webhook-id").expect("webhook-id").to_string();
        assert_eq!(r.json()["id"], id, "same event, same webhook-id");
        assert_eq!(r.header("hs-attempt"), Some("1"), "a fresh attempt budget");
        assert_eq!(
            r.header("traceparent"),
            Some(traceparent),
            "the trace link kept"
        );
        assert!(seen.insert(id.clone()), "{id} delivered twice");
    }
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);
    assert_quiet(down.recv_timeout(QUIET).await, "after the replay");
    assert_quiet(
        other.recv_timeout(Duration::ZERO).await,
        "the other destination",
    );
    assert_eq!(
        dlq_count(&app.nats, &dlq_subject).await,
        0,
        "replayed = removed"
    );

    // The event's status follows the replay.
    let (_, view) = app.get("/v1/events/r-7").await;
    let delivery = view["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .find(|d| d["destination_id"] == failing.as_str())
        .expect("the failing destination");
    assert_eq!(delivery["status"], "delivered", "{view}");

    // The same selection again sends nothing.
    let (status, again) = app
        .post("/v1/dlq/replay", json!({"destination_id": failing}))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        (again["matched"].as_u64(), again["replayed"].as_u64()),
        (Some(0), Some(0))
    );
    assert_quiet(down.recv_timeout(QUIET).await, "a second replay");
    assert_quiet(
        other.recv_timeout(Duration::ZERO).await,
        "the other destination",
    );
}

#[tokio::test]
async fn filters_by_time_range_and_event_type_select_exactly_the_right_dead_letters() {
    let app = spawn_app().await;
    let down = Receiver::start().await;
    down.set_status(500);
    let destination = create(
        &app,
        json!({"url": down.url("/down"), "event_types": ["order.*", "user.*"], "retry": dies_fast()}),
    )
    .await;
    let acme = create(
        &app,
        json!({"tenant": "acme", "url": down.url("/acme"), "event_types": [">"], "retry": dies_fast()}),
    )
    .await;
    let mut first = events("a-o", "order.created", 5);
    first.extend(events("a-u", "user.deleted", 3));
    post_batch(&app, first, None).await;
    wait_dlq_count(&app.nats, "hs.dlq.default.*", 8).await;

    tokio::time::sleep(Duration::from_millis(50)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut second = events("b-o", "order.created", 4);
    second.extend(events("b-u", "user.deleted", 2));
    post_batch(&app, second, None).await;
    app.post_event(json!({"id": "acme-1", "tenant": "acme", "type": "order.created", "data": {}}))
        .await;
    wait_dlq_count(&app.nats, "hs.dlq.>", 15).await;

    let union = |sets: &[BTreeSet<String>]| sets.iter().flatten().cloned().collect::<BTreeSet<_>>();
    let t = rfc3339(between);
    let dest = format!("destination_id={destination}");
    assert_eq!(
        listed_events(&app, &format!("{dest}&event_type=user.deleted")).await,
        union(&[ids("a-u", 3), ids("b-u", 2)])
    );
    assert_eq!(
        listed_events(&app, &format!("{dest}&since={t}")).await,
        union(&[ids("b-o", 4), ids("b-u", 2)])
    );
    assert_eq!(
        listed_events(&app, &format!("{dest}&until={t}")).await,
        union(&[ids("a-o", 5), ids("a-u", 3)])
    );
    assert_eq!(
        listed_events(&app, &format!("since={t}&event_type=order.created")).await,
        union(&[ids("b-o", 4), BTreeSet::from(["acme-1".to_string()])]),
        "both tenants"
    );
    assert_eq!(
        listed_events(&app, &format!("{dest}&event_type=order.*&until={t}")).await,
        ids("a-o", 5)
    );
    assert_eq!(
        listed_events(&app, "tenant=acme").await,
        BTreeSet::from(["acme-1".to_string()])
    );
    assert_eq!(
        listed_events(&app, &format!("destination_id={acme}&since={t}"))
            .await
            .len(),
        1
    );

    // Newest first by default, oldest first on request; pages of 3 see each once.
    let newest = list_all(&app, &dest, 3).await;
    let oldest = list_all(&app, &format!("{dest}&order=oldest"), 4).await;
    assert_eq!(newest.len(), 14);
    assert!(newest.windows(2).all(|w| w[0].0 > w[1].0), "{newest:?}");
    let mut reversed = oldest.clone();
    reversed.reverse();
    assert_eq!(newest, reversed);
    let unique: BTreeSet<_> = newest.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(unique.len(), 14, "no dead letter on two pages");
    let page = list_all(
        &app,
        &format!("{dest}&since={t}&event_type=user.deleted&order=newest"),
        1,
    )
    .await;
    assert_eq!(page.len(), 2, "{page:?}");

    // What a dead letter shows.
    let (_, listed) = app.get(&format!("/v1/dlq?{dest}&limit=1")).await;
    let letter = &listed["data"][0];
    assert_eq!(letter["tenant"], "default");
    assert_eq!(letter["destination_id"], destination.as_str());
    assert_eq!(letter["reason"], "max_attempts");
    assert_eq!(letter["attempts"], 2);
    assert_eq!(letter["last_status"], 500);
    assert_eq!(letter["last_error"], "HTTP 500");
    let at = |name: &str| -> DateTime<Utc> {
        letter[name]
            .as_str()
            .expect(name)
            .parse()
            .expect("RFC 3339")
    };
    assert!(at("first_attempt_at") < at("last_attempt_at"), "{letter}");
    assert!(at("last_attempt_at") <= at("dead_lettered_at"), "{letter}");
    let (status, one) = app.get(&format!("/v1/dlq/{}", letter["id"])).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["event"]["id"], letter["event_id"], "{one}");
    assert_eq!(one["event"]["type"], letter["event_type"], "{one}");

    // A replay with the same filters: a dry run counts, the replay sends exactly those.
    let selection =
        json!({"destination_id": destination, "since": t, "event_type": "order.created"});
    let mut dry = selection.clone();
    dry["dry_run"] = json!(true);
    let (_, counted) = app.post("/v1/dlq/replay", dry).await;
    assert_eq!(
        (counted["matched"].as_u64(), counted["replayed"].as_u64()),
        (Some(4), Some(0)),
        "{counted}"
    );
    down.drain().await;
    down.set_status(200);
    let (status, answer) = app.post("/v1/dlq/replay", selection).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["replayed"], 4, "{answer}");
    let got: BTreeSet<String> = down
        .collect(4, TIMEOUT)
        .await
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(got, ids("b-o", 4));
    assert_quiet(down.recv_timeout(QUIET).await, "only the selection");
    assert_eq!(
        listed_events(&app, &dest).await,
        union(&[ids("a-o", 5), ids("a-u", 3), ids("b-u", 2)])
    );

    // Bad filters are refused.
    for bad in [
        "event_type=a..b",
        "since=yesterday",
        "limit=0",
        "cursor=xyz",
        "order=up",
    ] {
        let (status, body) = app.get(&format!("/v1/dlq?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}

/// Runs `hookstream dlq <args>` against `url`; waits for it.
async fn cli(url: &str, args: &[&str]) -> Output {
    cli_command(url, args)
        .output()
        .await
        .expect("run hookstream dlq")
}

fn cli_command(url: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookstream"));
    command
        .arg("dlq")
        .args(args)
        .args(["--url", url])
        .env_remove("HOOKSTREAM_API_URL")
        .kill_on_drop(true);
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn post_json(url: &str, body: &Value) -> (StatusCode, Value) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    send(
        client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string()),
    )
    .await
}

#[tokio::test]
async fn service_killed_mid_replay_loses_nothing_and_a_second_replay_completes_the_rest() {
    const N: usize = 1000;
    // Ack wait = 2 s timeout + 1 s: a delivery cut off by the kill is retried quickly.
    let env = [("HOOKSTREAM_DELIVERY__ACK_WAIT_MARGIN_MS", "1000")];
    let nats = NatsServer::start().await;
    let mut service = ServiceProcess::spawn(&nats.url(), &env).await;
    let receiver = Receiver::start().await;
    receiver.set_status(500);
    let (status, created) = post_json(
        &format!("{}/v1/destinations", service.base_url()),
        &json!({"url": receiver.url("/hook"), "event_types": ["order.*"], "timeout_ms": 2000,
                "max_in_flight": 16, "retry": dies_fast()}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let destination = created["id"].as_str().unwrap().to_string();
    for half in 0..2 {
        let (status, answer) = post_json(
            &format!("{}/v1/events/batch", service.base_url()),
            &json!({"events": events(&format!("k{half}"), "order.created", N / 2)}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let expected: BTreeSet<String> = ids("k0", N / 2)
        .into_iter()
        .chain(ids("k1", N / 2))
        .collect();
    let dlq_subject = format!("hs.dlq.default.{destination}");
    wait_dlq_count(&nats, &dlq_subject, N).await;
    receiver.set_status(200);
    receiver.drain().await;

    // The CLI replays (one page of 1000); the service dies part-way through it, at best
    // while some re-publishes are stored and their dead letters not yet removed.
    let run = cli_command(
        &service.base_url(),
        &[
            "replay",
            "--destination",
            &destination,
            "--page-size",
            "1000",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("spawn the CLI");
    let directed = format!("hs.to.{destination}.>");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let left_at_kill = loop {
        let republished = count_on(&nats, "HS_EVENTS", &directed).await;
        let left = dlq_count(&nats, &dlq_subject).await;
        if republished > N - left || left < N - 200 {
            service.kill9();
            break left;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replay did not start"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert!(left_at_kill > 0, "the replay finished before the kill");
    let first = run.wait_with_output().await.expect("CLI output");
    assert!(
        !first.status.success(),
        "the CLI saw the service die: {}",
        text(&first.stdout)
    );
    assert!(
        text(&first.stderr).contains("run the same command again"),
        "{}",
        text(&first.stderr)
    );

    // Nothing lost: each event is still a dead letter or was re-published to the
    // destination (a replay is removed only after its re-publish is stored).
    let still_dead: BTreeSet<String> = event_ids_on(&nats, "HS_DLQ", &dlq_subject)
        .await
        .into_iter()
        .collect();
    let republished = event_ids_on(&nats, "HS_EVENTS", &directed).await;
    // Re-published but not yet removed when the service died.
    let in_between = republished
        .iter()
        .filter(|e| still_dead.contains(*e))
        .count();
    eprintln!(
        "DEBUG in_between={in_between} left={left_at_kill} still={}",
        still_dead.len()
    );
    let accounted: BTreeSet<String> = still_dead.iter().chain(&republished).cloned().collect();
    assert_eq!(accounted, expected, "every dead letter is accounted for");

    // Restarted, the same command (in pages of 50) does the rest: those re-published
    // before the kill are recognised (same Nats-Msg-Id) and not published again.
    let service = ServiceProcess::spawn(&nats.url(), &env).await;
    let second = cli(
        &service.base_url(),
        &["replay", "--destination", &destination, "--page-size", "50"],
    )
    .await;
    let summary = text(&second.stdout);
    assert!(second.status.success(), "{summary}{}", text(&second.stderr));
    let fresh = still_dead.len() - in_between;
    assert!(
        summary.contains(&format!(
            "replayed {fresh} dead letters ({in_between} had been replayed already"
        )),
        "{summary}"
    );
    wait_dlq_count(&nats, &dlq_subject, 0).await;

    // Re-published once each: a dead letter re-published just before the kill was not
    // published again by the second replay (same Nats-Msg-Id within the window).
    let republished = event_ids_on(&nats, "HS_EVENTS", &directed).await;
    assert_eq!(republished.len(), N, "one re-publish per dead letter");
    assert_eq!(republished.into_iter().collect::<BTreeSet<_>>(), expected);

    // Every event reaches the receiver (a delivery cut off by the kill may repeat, with
    // the same webhook-id).
    let mut delivered = BTreeSet::new();
    let mut requests = 0;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while delivered.len() < N {
        let Some(r) = receiver
            .recv_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        else {
            panic!(
                "{} of {N} delivered; missing e.g. {:?}",
                delivered.len(),
                expected.difference(&delivered).next()
            );
        };
        requests += 1;
        delivered.insert(r.header("webhook-id").unwrap().to_string());
    }
    assert_eq!(delivered, expected);
    assert!(
        requests <= N + 16,
        "{requests} requests: more repeats than deliveries in flight"
    );
}

#[tokio::test]
async fn resend_sends_a_delivered_event_again() {
    let app = spawn_app().await;
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    let dest_a = create(
        &app,
        json!({"url": a.url("/a"), "event_types": ["order.*"]}),
    )
    .await;
    create(
        &app,
        json!({"url": b.url("/b"), "event_types": ["order.*"]}),
    )
    .await;
    let (status, _) = app
        .post_event(json!({"id": "again-1", "type": "order.paid", "data": {"n": 1}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let first_a = a.recv_timeout(TIMEOUT).await.expect("delivered to a");
    b.recv_timeout(TIMEOUT).await.expect("delivered to b");
    // Both attempts recorded (the resend without a destination reads them).
    eventually(TIMEOUT, async || {
        let (_, view) = app.get("/v1/events/again-1").await;
        let delivered = view["deliveries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["status"] == "delivered")
            .count();
        if delivered == 2 {
            Ok(())
        } else {
            Err(format!("not both delivered: {view}"))
        }
    })
    .await;

    let (status, answer) = app
        .post(
            "/v1/events/again-1/resend",
            json!({"destination_id": dest_a}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(
        answer["resent"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    let again = a.recv_timeout(TIMEOUT).await.expect("sent again to a");
    assert_eq!(again.header("webhook-id"), Some("again-1"));
    assert_eq!(again.header("hs-attempt"), Some("1"));
    assert_eq!(again.body, first_a.body, "the same event");
    assert_quiet(b.recv_timeout(QUIET).await, "b was not asked");

    // Without a destination: everywhere it went.
    let (status, answer) = send(
        app.client
            .post(format!("{}/v1/events/again-1/resend", app.base_url())),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(
        answer["resent"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    a.recv_timeout(TIMEOUT).await.expect("a again");
    b.recv_timeout(TIMEOUT).await.expect("b again");
    assert_quiet(a.recv_timeout(QUIET).await, "one each");

    let (status, body) = app.post("/v1/events/nope/resend", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app
        .post(
            "/v1/events/again-1/resend",
            json!({"destination_id": "dst_nope"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// A destination with `n` dead letters (its receiver answers 500), and their ids.
async fn dead_destination(app: &TestApp, receiver: &Receiver, n: usize) -> (String, Vec<u64>) {
    receiver.set_status(500);
    let destination = create(
        app,
        json!({"url": receiver.url("/x"), "event_types": ["order.*"], "retry": dies_fast()}),
    )
    .await;
    post_batch(
        app,
        events(&format!("for-{destination}"), "order.created", n),
        None,
    )
    .await;
    wait_dlq_count(&app.nats, &format!("hs.dlq.default.{destination}"), n).await;
    let ids = list_all(app, &format!("destination_id={destination}"), 100)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    (destination, ids)
}

#[tokio::test]
async fn replay_to_a_deleted_destination_is_refused_and_the_dead_letters_stay() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (destination, dead) = dead_destination(&app, &receiver, 3).await;
    let (status, _) = app.delete(&format!("/v1/destinations/{destination}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    receiver.set_status(200);
    receiver.drain().await;

    for request in [
        json!({"destination_id": destination}),
        json!({"ids": dead}),
        json!({"destination_id": destination, "enable_destination": true}),
    ] {
        let (status, body) = app.post("/v1/dlq/replay", request.clone()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{request}: {body}");
        assert_eq!(body["error"]["code"], "destination_deleted", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&destination), "{message}");
    }
    // A replay over everything replays what it can and says what it left.
    let (status, body) = app.post("/v1/dlq/replay", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["replayed"], 0, "{body}");
    assert_eq!(body["skipped"][0]["code"], "destination_deleted", "{body}");
    assert_eq!(body["skipped"][0]["count"], 3, "{body}");
    assert_eq!(
        dlq_count(&app.nats, "hs.dlq.>").await,
        3,
        "the dead letters stay"
    );
    assert_quiet(receiver.recv_timeout(QUIET).await, "a deleted destination");
}

#[tokio::test]
async fn replay_to_a_disabled_destination_needs_enable_destination() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.set_status(410);
    let destination = create(
        &app,
        json!({"url": receiver.url("/gone"), "event_types": ["order.*"]}),
    )
    .await;
    app.post_event(json!({"id": "gone-1", "type": "order.created", "data": {}}))
        .await;
    wait_dlq_count(&app.nats, "hs.dlq.>", 1).await;
    let path = format!("/v1/destinations/{destination}");
    eventually(TIMEOUT, async || match app.get(&path).await.1 {
        view if view["enabled"] == false => Ok(()),
        view => Err(format!("410 disables: {view}")),
    })
    .await;
    receiver.drain().await;
    receiver.set_status(200);

    let (status, body) = app
        .post("/v1/dlq/replay", json!({"destination_id": destination}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "destination_disabled", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("enable_destination"),
        "{body}"
    );
    assert_quiet(receiver.recv_timeout(QUIET).await, "refused");

    let (status, body) = app
        .post(
            "/v1/dlq/replay",
            json!({"destination_id": destination, "enable_destination": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["replayed"], 1, "{body}");
    assert_eq!(body["enabled_destinations"], json!([destination]), "{body}");
    let r = receiver.recv_timeout(TIMEOUT).await.expect("replayed");
    assert_eq!(r.header("webhook-id"), Some("gone-1"));
    assert_eq!(app.get(&path).await.1["enabled"], true);
}

#[tokio::test]
async fn dead_letters_are_deleted_one_by_one_or_purged_by_filter() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.set_status(500);
    let destination = create(
        &app,
        json!({"url": receiver.url("/x"), "event_types": ["order.*", "user.*"], "retry": dies_fast()}),
    )
    .await;
    let mut batch = events("p-o", "order.created", 3);
    batch.extend(events("p-u", "user.deleted", 2));
    post_batch(&app, batch, None).await;
    wait_dlq_count(&app.nats, "hs.dlq.>", 5).await;
    let dest = format!("destination_id={destination}");
    let listed = list_all(&app, &format!("{dest}&event_type=order.created"), 100).await;

    let one = format!("/v1/dlq/{}", listed[0].0);
    assert_eq!(app.delete(&one).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.delete(&one).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&one).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.delete("/v1/dlq/abc").await.0, StatusCode::NOT_FOUND);
    assert_eq!(dlq_count(&app.nats, "hs.dlq.>").await, 4);

    let (status, body) = app.post("/v1/dlq/purge", json!({})).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a purge needs a filter: {body}"
    );
    let (status, body) = app
        .post(
            "/v1/dlq/purge",
            json!({"event_type": "user.deleted", "dry_run": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["matched"].as_u64(), body["purged"].as_u64()),
        (Some(2), Some(0))
    );
    let (_, body) = app
        .post("/v1/dlq/purge", json!({"event_type": "user.deleted"}))
        .await;
    assert_eq!(body["purged"], 2, "{body}");
    let remaining: BTreeSet<String> = listed.iter().skip(1).map(|(_, e)| e.clone()).collect();
    assert_eq!(
        listed_events(&app, &dest).await,
        remaining,
        "only the order events left"
    );
    let (_, body) = app
        .post("/v1/dlq/purge", json!({"destination_id": destination}))
        .await;
    assert_eq!(body["purged"], 2, "{body}");
    assert_eq!(dlq_count(&app.nats, "hs.dlq.>").await, 0);
}

#[tokio::test]
async fn cli_lists_counts_and_purges_dead_letters_of_a_running_service() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (destination, _) = dead_destination(&app, &receiver, 3).await;
    let url = app.base_url();

    let listed = cli(&url, &["list", "--json"]).await;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let lines: BTreeSet<String> = text(&listed.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("one JSON object per line");
            v["event_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(lines, ids(&format!("for-{destination}"), 3));
    let table = text(
        &cli(&url, &["list", "--destination", &destination])
            .await
            .stdout,
    );
    assert!(table.contains("DEAD-LETTERED AT"), "{table}");
    assert!(table.contains(&format!("for-{destination}-2")), "{table}");
    assert!(table.contains("max_attempts"), "{table}");

    let dry = cli(
        &url,
        &["replay", "--destination", &destination, "--dry-run"],
    )
    .await;
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(
        text(&dry.stdout).contains("dry run: 3 dead letters would be replayed"),
        "{}",
        text(&dry.stdout)
    );
    let dry = cli(&url, &["purge", "--type", "order.created", "--dry-run"]).await;
    assert!(
        text(&dry.stdout).contains("dry run: 3 dead letters would be purged"),
        "{}",
        text(&dry.stdout)
    );
    assert_eq!(
        dlq_count(&app.nats, "hs.dlq.>").await,
        3,
        "dry runs change nothing"
    );
    receiver.drain().await;
    assert_quiet(receiver.recv_timeout(QUIET).await, "dry run");

    let purged = cli(&url, &["purge", "--destination", &destination]).await;
    assert!(
        text(&purged.stdout).contains("purged 3 dead letters"),
        "{}",
        text(&purged.stdout)
    );
    assert_eq!(dlq_count(&app.nats, "hs.dlq.>").await, 0);

    let refused = cli(&url, &["purge"]).await;
    assert!(!refused.status.success());
    let unreachable = cli("http://127.0.0.1:9", &["list"]).await;
    assert!(!unreachable.status.success());
    assert!(
        text(&unreachable.stderr).contains("could not reach"),
        "{}",
        text(&unreachable.stderr)
    );
}

/// Runs `nats/dlq.py` (nats-py only, the example the README documents).
async fn nats_py_dlq(nats: &NatsServer, args: &[&str]) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("nats/dlq.py");
    let output = tokio::process::Command::new(crate::common::verify::python())
        .arg(script)
        .args(args)
        .args(["--url", &nats.url()])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run nats/dlq.py");
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

#[tokio::test]
async fn a_plain_nats_client_reads_and_replays_dead_letters() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (destination, dead) = dead_destination(&app, &receiver, 3).await;
    receiver.drain().await;

    let listed = nats_py_dlq(&app.nats, &["list", "--destination", &destination]).await;
    let letters: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(letters.len(), 3, "{listed}");
    for letter in &letters {
        assert!(dead.contains(&letter["id"].as_u64().unwrap()), "{letter}");
        assert_eq!(letter["reason"], "max_attempts");
        assert_eq!(letter["type"], "order.created");
    }

    receiver.set_status(200);
    let answer = nats_py_dlq(&app.nats, &["replay", "--destination", &destination]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&answer).expect("JSON"),
        json!({"replayed": 3, "already_replayed": 0})
    );
    let got: BTreeSet<String> = receiver
        .collect(3, TIMEOUT)
        .await
        .iter()
        .map(|r| {
            assert_eq!(r.header("hs-attempt"), Some("1"));
            r.header("webhook-id").unwrap().to_string()
        })
        .collect();
    assert_eq!(got, ids(&format!("for-{destination}"), 3));
    assert_quiet(receiver.recv_timeout(QUIET).await, "each once");
    assert_eq!(dlq_count(&app.nats, "hs.dlq.>").await, 0);
}
