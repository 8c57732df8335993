//! Operational events (docs/adr/0013): hookstream tells a tenant's subscribed destinations
//! that a destination was disabled (after a 410, after failing too long), that its
//! circuit opened or closed (a flapping one at most once per interval), that an event was
//! dead-lettered; signed like any event, and never about a subscriber failing on them.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Receiver, Request, TestApp, spawn_app, spawn_app_with, verify_with_python};

const WAIT: Duration = Duration::from_secs(15);
/// How long we listen to show that nothing more arrives.
const QUIET: Duration = Duration::from_millis(1500);

/// Creates a destination; answers `(id, secret)`.
async fn create(app: &TestApp, destination: Value) -> (String, String) {
    let (status, body) = app.create_destination(destination).await;
    assert_eq!(status, StatusCode::CREATED, "create destination: {body}");
    (
        body["id"].as_str().expect("id").to_string(),
        body["secret"].as_str().expect("secret").to_string(),
    )
}

/// A receiver answering `status`, and a destination of `tenant` at it for `destination`'s
/// other fields (`event_types`, `retry`…); answers `(receiver, id, secret)`.
async fn listening(
    app: &TestApp,
    tenant: &str,
    status: u16,
    mut destination: Value,
) -> (Receiver, String, String) {
    let receiver = Receiver::start().await;
    receiver.set_status(status);
    destination["tenant"] = json!(tenant);
    destination["url"] = json!(receiver.url("/hook"));
    let (id, secret) = create(app, destination).await;
    (receiver, id, secret)
}

/// A receiver answering 200 with a destination of tenant `default` subscribed to
/// `pattern`; answers `(receiver, secret)`.
async fn ops_receiver(app: &TestApp, pattern: &str) -> (Receiver, String) {
    let (receiver, _, secret) =
        listening(app, "default", 200, json!({ "event_types": [pattern] })).await;
    (receiver, secret)
}

async fn send(app: &TestApp, event: Value) -> String {
    crate::common::steps::send(app, event).await
}

/// Receives one request, or fails saying what was awaited.
async fn one(receiver: &Receiver, what: &str) -> Request {
    receiver
        .recv_timeout(WAIT)
        .await
        .unwrap_or_else(|| panic!("{what}: nothing arrived within {WAIT:?}"))
}

/// An operational event as a subscriber got it: checked with the reference Standard
/// Webhooks library under the subscriber's secret, from hookstream, of `tenant`.
async fn operational(request: &Request, secret: &str, tenant: &str) -> Value {
    verify_with_python(secret, &request.header_pairs(), &request.body)
        .await
        .unwrap_or_else(|why| panic!("the reference library rejects the operational event: {why}"));
    let envelope = request.json();
    assert_eq!(envelope["source"], "hookstream", "{envelope}");
    assert_eq!(envelope["tenant"], tenant, "{envelope}");
    assert_eq!(
        request.header("hs-event-type"),
        envelope["type"].as_str(),
        "{envelope}"
    );
    assert_eq!(request.header("webhook-id"), envelope["id"].as_str());
    envelope
}

/// Waits until `check` holds for the destination's API view.
async fn wait_destination(
    app: &TestApp,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, view) = app.get(&format!("/v1/destinations/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        if check(&view) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The events of types `pattern` stored on `HS_EVENTS` (event search), oldest first.
async fn stored(app: &TestApp, pattern: &str) -> Vec<Value> {
    let (status, page) = app
        .get(&format!("/v1/events?event_type={pattern}&limit=1000"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut events = page["data"].as_array().expect("data").clone();
    events.reverse();
    events
}

#[tokio::test]
async fn a_410_is_told_to_the_subscribers_as_a_dead_letter_and_a_disabled_destination() {
    let app = spawn_app().await;
    let (ops, subscriber, secret) =
        listening(&app, "acme", 200, json!({"event_types": ["hookstream.>"]})).await;
    let (gone, destination, _) =
        listening(&app, "acme", 410, json!({"event_types": ["order.*"]})).await;
    // A catch-all destination does not get them: hookstream's types are asked for by name.
    let (catch_all, _, _) = listening(&app, "acme", 200, json!({"event_types": [">"]})).await;
    // Another tenant's subscriber hears nothing of it.
    let (other, _, _) =
        listening(&app, "other", 200, json!({"event_types": ["hookstream.>"]})).await;

    let event = send(
        &app,
        json!({"tenant": "acme", "type": "order.created", "data": {}}),
    )
    .await;
    one(&gone, "the attempt answered 410").await;

    let mut told = Vec::new();
    for _ in 0..2 {
        let request = one(&ops, "an operational event").await;
        told.push(operational(&request, &secret, "acme").await);
    }
    told.sort_by_key(|e| e["type"].as_str().unwrap_or_default().to_string());
    let [disabled, dead_lettered] = &told[..] else {
        unreachable!()
    };
    assert_eq!(
        disabled["type"], "hookstream.destination.disabled",
        "{told:?}"
    );
    assert_eq!(disabled["data"]["destination_id"], destination.as_str());
    assert_eq!(disabled["data"]["event_id"], event.as_str());
    assert_eq!(disabled["data"]["reason"], "gone");
    assert_eq!(disabled["data"]["last_answer"], "HTTP 410");
    assert_eq!(
        dead_lettered["type"], "hookstream.event.dead_lettered",
        "{told:?}"
    );
    assert_eq!(
        dead_lettered["data"]["destination_id"],
        destination.as_str()
    );
    assert_eq!(dead_lettered["data"]["event_id"], event.as_str());
    assert_eq!(dead_lettered["data"]["event_type"], "order.created");
    assert_eq!(dead_lettered["data"]["reason"], "gone");
    assert_eq!(dead_lettered["data"]["last_status"], 410);

    let view = wait_destination(&app, &destination, "disabled", |v| v["enabled"] == false).await;
    assert!(
        view["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.contains("410")),
        "{view}"
    );
    assert!(
        ops.recv_timeout(QUIET).await.is_none(),
        "one of each, no more"
    );
    let all = catch_all.drain().await;
    assert_eq!(all.len(), 1, "only the order event at `>`: {all:?}");
    assert_eq!(all[0].header("webhook-id"), Some(event.as_str()));
    assert!(
        other.recv_timeout(Duration::ZERO).await.is_none(),
        "another tenant's subscriber"
    );
    // They are events of the tenant like any other: listed, and delivered to the subscriber.
    let stored = stored(&app, "hookstream.>").await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored.iter().all(|e| e["tenant"] == "acme"), "{stored:?}");
    let (_, page) = app
        .get(&format!(
            "/v1/events?event_type=hookstream.>&destination_id={subscriber}&status=delivered"
        ))
        .await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(2), "{page}");
}

#[tokio::test]
async fn an_opened_circuit_is_told_to_the_subscribers() {
    let app = spawn_app_with(|cfg| {
        cfg.flow.circuit_failure_threshold = 2;
        // No probe during the test: the circuit stays open.
        cfg.flow.circuit_cooldown = Duration::from_millis(600_000);
    })
    .await;
    let (ops, secret) = ops_receiver(&app, "hookstream.destination.*").await;
    let (failing, destination, _) = listening(
        &app,
        "default",
        503,
        json!({"event_types": ["order.*"],
               "retry": {"schedule_ms": [50, 50, 50], "max_attempts": 4}}),
    )
    .await;

    let event = send(&app, json!({"type": "order.created", "data": {"n": 1}})).await;
    let request = one(&ops, "circuit_opened").await;
    let opened = operational(&request, &secret, "default").await;
    assert_eq!(
        opened["type"], "hookstream.destination.circuit_opened",
        "{opened}"
    );
    let data = &opened["data"];
    assert_eq!(data["destination_id"], destination.as_str(), "{data}");
    assert_eq!(data["event_id"], event.as_str(), "{data}");
    assert_eq!(data["failures"], 2, "{data}");
    assert_eq!(
        data["reason"], "2 consecutive failed attempts, the last: HTTP 503",
        "{data}"
    );
    assert!(
        data["until"].is_string() && data["opened_at"].is_string(),
        "{data}"
    );
    assert_eq!(failing.collect(2, WAIT).await.len(), 2, "the two failures");
    assert!(ops.recv_timeout(QUIET).await.is_none(), "told once");
    assert!(
        failing.recv_timeout(Duration::ZERO).await.is_none(),
        "open: nothing sent"
    );
}

#[tokio::test]
async fn a_subscriber_failing_on_operational_events_is_not_announced() {
    let app = spawn_app_with(|cfg| {
        cfg.flow.circuit_failure_threshold = 2;
        cfg.flow.circuit_cooldown = Duration::from_millis(600_000);
    })
    .await;
    let (_failing, destination, _) = listening(
        &app,
        "default",
        503,
        json!({"event_types": ["order.*"],
               "retry": {"schedule_ms": [50, 50, 50], "max_attempts": 4}}),
    )
    .await;
    // Fails every operational event: its circuit opens and they are dead-lettered.
    let (broken, subscriber, _) = listening(
        &app,
        "default",
        503,
        json!({"event_types": ["hookstream.>"],
               "retry": {"schedule_ms": [50], "max_attempts": 2}}),
    )
    .await;
    let (observer, secret) = ops_receiver(&app, "hookstream.>").await;

    send(&app, json!({"type": "order.created", "data": {}})).await;
    let request = one(&observer, "circuit_opened of the failing destination").await;
    let opened = operational(&request, &secret, "default").await;
    assert_eq!(opened["type"], "hookstream.destination.circuit_opened");
    assert_eq!(opened["data"]["destination_id"], destination.as_str());

    // The subscriber failed on it twice: dead-lettered there, and its circuit is open.
    assert_eq!(
        broken.collect(2, WAIT).await.len(),
        2,
        "two attempts at the subscriber"
    );
    wait_destination(&app, &subscriber, "the subscriber's circuit open", |v| {
        v["circuit"]["state"] == "open"
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, letters) = app
            .get(&format!("/v1/dlq?destination_id={subscriber}"))
            .await;
        if letters["data"].as_array().is_some_and(|d| d.len() == 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter at the subscriber: {letters}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Neither is told: nothing more stored, nothing more delivered.
    let stored = stored(&app, "hookstream.>").await;
    assert_eq!(
        stored.len(),
        1,
        "only the failing destination's circuit: {stored:?}"
    );
    assert!(
        observer.recv_timeout(QUIET).await.is_none(),
        "nothing told about the subscriber"
    );
}

#[tokio::test]
async fn a_flapping_circuit_is_told_at_most_once_per_interval_and_its_last_state_after_it() {
    const INTERVAL: Duration = Duration::from_secs(5);
    let app = spawn_app_with(|cfg| {
        cfg.flow.circuit_failure_threshold = 1;
        cfg.flow.circuit_cooldown = Duration::from_millis(200);
        cfg.flow.circuit_probes = 1;
        cfg.flow.circuit_announce_interval = INTERVAL;
    })
    .await;
    let (ops, secret) = ops_receiver(&app, "hookstream.destination.*").await;
    let (flapping, destination, _) = listening(
        &app,
        "default",
        200,
        json!({"event_types": ["order.*"], "retry": {"schedule_ms": [], "max_attempts": 1}}),
    )
    .await;

    // Open, closed, open, closed: one event each, the receiver failing every other one.
    let mut last = String::new();
    let mut started = std::time::Instant::now();
    for (i, status) in [503, 200, 503, 200].into_iter().enumerate() {
        flapping.set_status(status);
        last = send(&app, json!({"type": "order.created", "data": {"i": i}})).await;
        let request = one(&flapping, "the flapping destination's attempt").await;
        assert_eq!(request.header("webhook-id"), Some(last.as_str()));
        if i == 0 {
            let opened = one(&ops, "circuit_opened").await;
            started = opened.received_at;
            let opened = operational(&opened, &secret, "default").await;
            assert_eq!(opened["type"], "hookstream.destination.circuit_opened");
        }
    }
    let flapped_at = std::time::Instant::now();
    let closed = one(&ops, "circuit_closed after the interval").await;
    let closed = operational(&closed, &secret, "default").await;
    assert_eq!(
        closed["type"], "hookstream.destination.circuit_closed",
        "{closed}"
    );
    assert_eq!(closed["data"]["destination_id"], destination.as_str());
    assert_eq!(
        closed["data"]["event_id"],
        last.as_str(),
        "the attempt that closed it last"
    );
    let told = stored(&app, "hookstream.destination.*").await;
    let stored_at = |e: &Value| {
        chrono::DateTime::parse_from_rfc3339(e["stored_at"].as_str().expect("stored_at"))
            .expect("RFC 3339")
    };
    let gap = (stored_at(&told[told.len() - 1]) - stored_at(&told[0]))
        .to_std()
        .unwrap_or_default();
    assert!(
        gap >= INTERVAL - Duration::from_millis(100),
        "circuit_closed stored {gap:?} after circuit_opened, interval {INTERVAL:?}"
    );
    assert!(
        flapped_at.duration_since(started) < INTERVAL,
        "the four changes took longer than the interval: the test shows nothing"
    );
    assert!(
        ops.recv_timeout(QUIET).await.is_none(),
        "two announcements for four changes"
    );
    assert_eq!(told.len(), 2, "{told:?}");
}

#[tokio::test]
async fn a_destination_failing_for_disable_after_is_disabled_told_and_re_enabled_in_the_console() {
    let app = spawn_app_with(|cfg| {
        cfg.delivery.disable_after = Duration::from_secs(1);
        cfg.flow.circuit_failure_threshold = 1000;
    })
    .await;
    let (ops, secret) = ops_receiver(&app, "hookstream.destination.disabled").await;
    let (failing, destination, _) = listening(
        &app,
        "default",
        500,
        json!({"event_types": ["order.*"],
               "retry": {"schedule_ms": [200, 200, 200, 200, 200, 200, 200, 200, 200, 200],
                         "max_attempts": 11}}),
    )
    .await;
    let event = send(&app, json!({"type": "order.created", "data": {}})).await;

    let request = one(&ops, "destination.disabled").await;
    let disabled = operational(&request, &secret, "default").await;
    assert_eq!(disabled["type"], "hookstream.destination.disabled");
    assert_eq!(disabled["data"]["destination_id"], destination.as_str());
    assert_eq!(disabled["data"]["event_id"], event.as_str());
    assert_eq!(disabled["data"]["reason"], "failing");
    assert_eq!(disabled["data"]["last_answer"], "HTTP 500");
    let view = wait_destination(&app, &destination, "disabled", |v| v["enabled"] == false).await;
    assert_eq!(view["disabled_reason"], "failing", "{view}");
    let attempts = failing.drain().await.len();
    assert!(
        attempts < 11,
        "disabled after about a second of failures, before its last attempt: {attempts}"
    );
    // Disabled: the retry waits in the shard, nothing is sent.
    assert!(
        failing.recv_timeout(QUIET).await.is_none(),
        "a disabled destination gets nothing"
    );

    // One click in the console, and the event that waited is delivered.
    failing.set_status(200);
    let console = crate::console::Browser::sign_in(&app, "")
        .await
        .expect("sign in");
    let (_, page) = console
        .get(&format!("/console/destinations/{destination}"))
        .await;
    assert!(
        page.contains("disabled (failing)") && page.contains("id=\"enable\""),
        "{page}"
    );
    let csrf = crate::console::Browser::csrf(&page);
    let (status, _) = console
        .post(
            &format!("/console/destinations/{destination}/enable"),
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let view = wait_destination(&app, &destination, "re-enabled", |v| v["enabled"] == true).await;
    assert!(
        view.get("disabled_reason").is_none_or(Value::is_null),
        "{view}"
    );
    let request = one(&failing, "the event that waited").await;
    assert_eq!(request.header("webhook-id"), Some(event.as_str()));
    assert!(ops.recv_timeout(QUIET).await.is_none(), "disabled once");
}
