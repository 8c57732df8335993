//! Managing destinations while events flow: changes take effect on the next event without
//! a restart, deletion stops deliveries, pause holds events and resume releases every one
//! of them, secret rotation keeps old and new signatures valid through the grace period,
//! listing pages through everything, and the secret is shown only when it is made.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::steps::{assert_quiet, eventually, send};
use crate::common::{Receiver, Request, TestApp, spawn_app, verify_with_python};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(600);

/// Creates a destination; returns `(id, secret)`.
async fn create(app: &TestApp, destination: Value) -> (String, String) {
    let (status, body) = app.create_destination(destination).await;
    assert_eq!(status, StatusCode::CREATED, "create destination: {body}");
    (
        body["id"].as_str().expect("id").to_string(),
        body["secret"].as_str().expect("secret").to_string(),
    )
}

async fn next_request(receiver: &Receiver, what: &str) -> Request {
    receiver
        .recv_timeout(DELIVERY_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("{what}: nothing within {DELIVERY_TIMEOUT:?}"))
}

#[track_caller]
fn assert_no_secret(view: &Value, what: &str) {
    assert!(
        view.get("secret").is_none() && view.get("secrets").is_none(),
        "{what} shows a secret: {view}"
    );
    assert!(
        !view.to_string().contains("whsec_"),
        "{what} leaks a secret: {view}"
    );
}

fn random_secret(byte: u8) -> String {
    format!("whsec_{}", BASE64.encode([byte; 32]))
}

#[tokio::test]
async fn patch_changes_url_and_event_types_for_the_next_event() {
    let app = spawn_app().await;
    let (old, new) = (Receiver::start().await, Receiver::start().await);
    let (id, secret) = create(
        &app,
        json!({"url": old.url("/old"), "event_types": ["order.created"], "description": "d"}),
    )
    .await;
    send(&app, json!({"type": "order.created", "data": {}})).await;
    next_request(&old, "before the change").await;

    let (status, view) = app
        .patch(
            &format!("/v1/destinations/{id}"),
            json!({"url": new.url("/new"), "event_types": ["invoice.*"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["url"], new.url("/new"));
    assert_eq!(view["event_types"], json!(["invoice.*"]));
    assert_eq!(
        view["description"], "d",
        "PATCH keeps what it does not name"
    );
    assert_no_secret(&view, "PATCH answer");

    // The old type no longer matches; the new one goes to the new URL.
    send(&app, json!({"type": "order.created", "data": {}})).await;
    let invoice = send(&app, json!({"type": "invoice.paid", "data": {}})).await;
    let request = next_request(&new, "after the change").await;
    assert_eq!(request.uri, "/new");
    assert_eq!(request.header("webhook-id"), Some(invoice.as_str()));
    verify_with_python(&secret, &request.header_pairs(), &request.body)
        .await
        .expect("the secret survives a PATCH");
    assert_quiet(new.recv_timeout(QUIET).await, "new URL, order.created");
    assert_quiet(
        old.recv_timeout(Duration::from_millis(100)).await,
        "old URL",
    );

    let (_, read) = app.get(&format!("/v1/destinations/{id}")).await;
    assert_eq!(read["url"], new.url("/new"));
    assert_eq!(read["event_types"], json!(["invoice.*"]));
}

#[tokio::test]
async fn put_replaces_the_settings_for_the_next_event() {
    let app = spawn_app().await;
    let (old, new) = (Receiver::start().await, Receiver::start().await);
    let (id, secret) = create(
        &app,
        json!({
            "url": old.url("/old"),
            "event_types": ["a.*"],
            "headers": {"X-Old": "1"},
            "description": "before",
        }),
    )
    .await;

    let (status, view) = app
        .put(
            &format!("/v1/destinations/{id}"),
            json!({
                "url": new.url("/new"),
                "event_types": ["b.>"],
                "body": "data",
                "method": "PUT",
                "headers": {"X-New": "2"},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["id"], id.as_str());
    assert_eq!(view["method"], "PUT");
    assert_eq!(view["body"], "data");
    assert_eq!(view["headers"], json!({"X-New": "2"}));
    assert!(
        view.get("description").is_none_or(Value::is_null),
        "PUT replaces: an absent description is cleared: {view}"
    );
    assert_no_secret(&view, "PUT answer");

    send(&app, json!({"type": "a.x", "data": {"old": true}})).await;
    let id_b = send(&app, json!({"type": "b.x.y", "data": {"new": true}})).await;
    let request = next_request(&new, "after PUT").await;
    assert_eq!(request.method, "PUT");
    assert_eq!(request.uri, "/new");
    assert_eq!(request.header("webhook-id"), Some(id_b.as_str()));
    assert_eq!(&request.body[..], br#"{"new":true}"#);
    assert_eq!(request.header("x-new"), Some("2"));
    assert_eq!(request.header("x-old"), None);
    verify_with_python(&secret, &request.header_pairs(), &request.body)
        .await
        .expect("the secret survives a PUT");
    assert_quiet(new.recv_timeout(QUIET).await, "new URL, a.x");
    assert_quiet(
        old.recv_timeout(Duration::from_millis(100)).await,
        "old URL",
    );
}

#[tokio::test]
async fn deleted_destination_gets_nothing_more_and_is_gone() {
    let app = spawn_app().await;
    let (doomed, survivor) = (Receiver::start().await, Receiver::start().await);
    let (id, _) = create(&app, json!({"url": doomed.url("/"), "event_types": [">"]})).await;
    create(
        &app,
        json!({"url": survivor.url("/"), "event_types": [">"]}),
    )
    .await;
    send(&app, json!({"type": "x", "data": {}})).await;
    next_request(&doomed, "before delete").await;
    next_request(&survivor, "before delete").await;

    let (status, _) = app.delete(&format!("/v1/destinations/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&format!("/v1/destinations/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.delete(&format!("/v1/destinations/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a second delete");
    let (_, list) = app.get("/v1/destinations").await;
    assert!(
        !list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == id.as_str()),
        "deleted destination still listed: {list}"
    );
    let js = jetstream::new(app.nats.client().await);
    let events = js.get_stream("HS_EVENTS").await.unwrap();
    assert!(
        events.consumer_info(format!("dest_{id}")).await.is_err(),
        "its consumer is deleted with it"
    );

    let after = send(&app, json!({"type": "x", "data": {}})).await;
    let request = next_request(&survivor, "after delete").await;
    assert_eq!(request.header("webhook-id"), Some(after.as_str()));
    assert_quiet(doomed.recv_timeout(QUIET).await, "deleted destination");
}

/// Pull requests the app has sent, from its `/metrics`.
async fn pulls(app: &crate::common::TestApp) -> f64 {
    let text = reqwest::get(format!("{}/metrics", app.base_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    crate::common::prometheus::Scrape::parse(&text)
        .expect("/metrics parses")
        .value("hookstream_pulls_total", &[])
}

#[tokio::test]
async fn paused_destination_holds_its_events_until_resumed() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (id, _) = create(
        &app,
        json!({"url": receiver.url("/"), "event_types": [">"]}),
    )
    .await;

    let (status, view) = app
        .post(&format!("/v1/destinations/{id}/pause"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["paused"], true);
    assert_no_secret(&view, "pause answer");

    let pulls_before = pulls(&app).await;
    let mut sent = BTreeSet::new();
    for n in 0..5 {
        sent.insert(send(&app, json!({"type": "held", "data": {"n": n}})).await);
    }
    assert_quiet(receiver.recv_timeout(QUIET).await, "while paused");
    // Woken by each event's signal and by sweeps (every 500 ms here), a paused
    // destination still costs no pull request.
    assert_eq!(
        pulls(&app).await,
        pulls_before,
        "pull requests while paused"
    );
    let row = eventually(Duration::from_secs(5), async || {
        let (_, stats) = app.get("/v1/stats").await;
        let row = stats["data"][0].clone();
        if row["backlog"] == 5 {
            Ok(row)
        } else {
            Err(format!("stats never showed the 5 waiting events: {stats}"))
        }
    })
    .await;
    assert_eq!(row["paused"], true, "{row}");
    assert_eq!(row["delivered"], 0, "{row}");
    let (_, read) = app.get(&format!("/v1/destinations/{id}")).await;
    assert_eq!(read["paused"], true);

    let (status, view) = app
        .post(&format!("/v1/destinations/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["paused"], false);
    let got: BTreeSet<String> = receiver
        .collect(5, DELIVERY_TIMEOUT)
        .await
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(got, sent, "every held event, once");
    assert!(pulls(&app).await > pulls_before, "resume drains by pulling");
    assert_quiet(receiver.recv_timeout(QUIET).await, "after resume");
}

#[tokio::test]
async fn rotated_secret_and_the_old_one_both_verify_during_the_grace_period() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (id, first) = create(
        &app,
        json!({"url": receiver.url("/"), "event_types": [">"]}),
    )
    .await;
    let stranger = random_secret(9);

    let (status, rotated) = app
        .post(
            &format!("/v1/destinations/{id}/rotate-secret"),
            json!({"grace_secs": 3600}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second = rotated["secret"].as_str().expect("new secret").to_string();
    assert!(second.starts_with("whsec_") && second != first);

    send(&app, json!({"type": "x", "data": {"during": "grace"}})).await;
    let request = next_request(&receiver, "during grace").await;
    let signatures = request.header("webhook-signature").unwrap();
    assert_eq!(
        signatures.split(' ').count(),
        2,
        "one signature per active secret: {signatures}"
    );
    let headers = request.header_pairs();
    for (name, secret) in [("old", &first), ("new", &second)] {
        verify_with_python(secret, &headers, &request.body)
            .await
            .unwrap_or_else(|why| panic!("{name} secret does not verify during grace: {why}"));
    }
    assert!(
        verify_with_python(&stranger, &headers, &request.body)
            .await
            .is_err(),
        "an unrelated secret must not verify"
    );

    // Rotating again with no grace and a chosen secret: only that one signs now.
    let third = random_secret(3);
    let (status, rotated) = app
        .post(
            &format!("/v1/destinations/{id}/rotate-secret"),
            json!({"secret": third, "grace_secs": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["secret"], third.as_str());

    send(&app, json!({"type": "x", "data": {"after": "grace"}})).await;
    let request = next_request(&receiver, "after the second rotation").await;
    let signatures = request.header("webhook-signature").unwrap();
    assert_eq!(signatures.split(' ').count(), 1, "{signatures}");
    let headers = request.header_pairs();
    verify_with_python(&third, &headers, &request.body)
        .await
        .expect("the chosen secret verifies");
    for (name, secret) in [("first", &first), ("second", &second)] {
        assert!(
            verify_with_python(secret, &headers, &request.body)
                .await
                .is_err(),
            "the {name} secret still verifies after a rotation without grace"
        );
    }
    let (_, read) = app.get(&format!("/v1/destinations/{id}")).await;
    assert_no_secret(&read, "GET after rotation");
}

/// Follows `next_cursor` from the first page to the last; returns the ids in the order
/// listed and the number of pages.
async fn list_all(app: &TestApp, query: &str) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/destinations?{query}&cursor={c}"),
            None => format!("/v1/destinations?{query}"),
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        pages += 1;
        for item in page["data"].as_array().expect("data") {
            assert_no_secret(item, "list item");
            seen.push(item["id"].as_str().expect("id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return (seen, pages),
        }
        assert!(pages < 20, "paging does not end: {seen:?}");
    }
}

#[tokio::test]
async fn list_pages_through_every_destination_and_filters_by_tenant() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let mut acme = BTreeSet::new();
    let mut all = BTreeSet::new();
    for n in 0..7 {
        let id = format!("acme-{n:02}");
        create(
            &app,
            json!({"id": id, "url": receiver.url("/"), "event_types": [">"], "tenant": "acme"}),
        )
        .await;
        acme.insert(id.clone());
        all.insert(id);
    }
    for id in ["acme-00-other", "acme-01-other", "acme-02-other", "zz-last"] {
        // Interleaved with acme's ids when sorted (and one after them all), so that
        // tenant pages skip over them.
        let id = id.to_string();
        create(
            &app,
            json!({"id": id, "url": receiver.url("/"), "event_types": [">"]}),
        )
        .await;
        all.insert(id);
    }

    let (seen, pages) = list_all(&app, "tenant=acme&limit=3").await;
    assert_eq!(
        seen,
        acme.iter().cloned().collect::<Vec<_>>(),
        "acme's destinations, each once, in id order"
    );
    // A cursor only says that more *may* follow: an empty last page is allowed.
    assert!((3..=4).contains(&pages), "7 items in pages of 3: {pages}");

    let (seen, _) = list_all(&app, "limit=4").await;
    assert_eq!(seen, all.iter().cloned().collect::<Vec<_>>());

    let (_, one_page) = app.get("/v1/destinations?limit=1000").await;
    assert_eq!(one_page["data"].as_array().unwrap().len(), 11);
    assert!(one_page["next_cursor"].is_null(), "{one_page}");
}

#[tokio::test]
async fn secret_is_shown_on_create_and_rotate_only() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (status, created) = app
        .create_destination(json!({"url": receiver.url("/"), "event_types": [">"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let secret = created["secret"].as_str().expect("secret on create");
    assert!(secret.starts_with("whsec_"));
    let key = BASE64
        .decode(&secret["whsec_".len()..])
        .expect("base64 after whsec_");
    assert!(key.len() >= 24, "a key of {} bytes is too short", key.len());
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/destinations/{id}");

    let (_, read) = app.get(&path).await;
    assert_no_secret(&read, "GET");
    let (_, list) = app.get("/v1/destinations").await;
    assert_no_secret(&list, "list");
    let (_, patched) = app.patch(&path, json!({"description": "x"})).await;
    assert_no_secret(&patched, "PATCH");
    let (_, put) = app
        .put(
            &path,
            json!({"url": receiver.url("/"), "event_types": [">"]}),
        )
        .await;
    assert_no_secret(&put, "PUT");
    let (_, paused) = app.post(&format!("{path}/pause"), json!({})).await;
    assert_no_secret(&paused, "pause");
    let (_, resumed) = app.post(&format!("{path}/resume"), json!({})).await;
    assert_no_secret(&resumed, "resume");
    let (_, stats) = app.get("/v1/stats").await;
    assert_no_secret(&stats, "stats");

    let (status, rotated) = app.post(&format!("{path}/rotate-secret"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().expect("secret on rotate");
    assert_ne!(new_secret, secret);
    let (_, read) = app.get(&path).await;
    assert_no_secret(&read, "GET after rotate");
}

#[tokio::test]
async fn deleting_a_destination_stops_its_pending_retries() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.set_status(500);
    let (id, _) = create(
        &app,
        json!({
            "url": receiver.url("/"),
            "event_types": [">"],
            "retry": {"schedule_ms": [400], "max_attempts": 10},
        }),
    )
    .await;
    send(&app, json!({"type": "x", "data": {}})).await;
    let first = next_request(&receiver, "first attempt").await;
    assert_eq!(first.header("hs-attempt"), Some("1"));

    let (status, _) = app.delete(&format!("/v1/destinations/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Attempt 2 was due 400 ms after the first; wait well past it.
    if let Some(late) = receiver.recv_timeout(Duration::from_millis(1500)).await {
        // Attempt 2 may already have been on its way while the delete was answered, but
        // nothing may follow it.
        assert_eq!(late.header("hs-attempt"), Some("2"), "retries went on");
        assert_quiet(
            receiver.recv_timeout(Duration::from_millis(1000)).await,
            "retries after delete",
        );
    }
}

#[tokio::test]
async fn old_secret_stops_signing_when_the_grace_period_ends() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (id, old) = create(
        &app,
        json!({"url": receiver.url("/"), "event_types": [">"]}),
    )
    .await;
    let (status, rotated) = app
        .post(
            &format!("/v1/destinations/{id}/rotate-secret"),
            json!({"grace_secs": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();

    send(&app, json!({"type": "x", "data": 1})).await;
    let during = next_request(&receiver, "during grace").await;
    verify_with_python(&old, &during.header_pairs(), &during.body)
        .await
        .expect("old secret verifies during the grace period");

    // Waiting for the clock, not for the system to settle: the grace period is 1 s.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send(&app, json!({"type": "x", "data": 2})).await;
    let after = next_request(&receiver, "after grace").await;
    let signatures = after.header("webhook-signature").unwrap();
    assert_eq!(signatures.split(' ').count(), 1, "{signatures}");
    verify_with_python(&new, &after.header_pairs(), &after.body)
        .await
        .expect("new secret verifies");
    assert!(
        verify_with_python(&old, &after.header_pairs(), &after.body)
            .await
            .is_err(),
        "the old secret still signs after its grace period"
    );
}

#[tokio::test]
async fn a_change_applies_to_the_backlog_already_waiting() {
    let app = spawn_app().await;
    let (old, new) = (Receiver::start().await, Receiver::start().await);
    old.set_delay(Duration::from_millis(150));
    let (id, _) = create(
        &app,
        json!({"url": old.url("/old"), "event_types": [">"], "max_in_flight": 1}),
    )
    .await;
    let batch: Vec<Value> = (0..20)
        .map(|n| json!({"type": "q", "data": {"n": n}}))
        .collect();
    let (status, answer) = app.post_batch(json!({ "events": batch })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    next_request(&old, "the first of the backlog").await;

    let (status, view) = app
        .patch(
            &format!("/v1/destinations/{id}"),
            json!({"url": new.url("/new")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let changed_at = std::time::Instant::now();

    // One or two requests may already be on their way to the old URL; the rest of the
    // backlog must follow the change.
    // 20 × 150 ms: the whole backlog takes about 3 s wherever it goes.
    let to_new = new.collect(15, Duration::from_secs(6)).await;
    let to_old = old.drain().await;
    assert!(
        to_old.len() <= 2,
        "{} more requests went to the old URL after the PATCH (answered {:?} ago)",
        to_old.len(),
        changed_at.elapsed()
    );
    assert!(
        to_new.len() >= 15,
        "only {} went to the new URL",
        to_new.len()
    );
}

/// `events.max_consumers` bounds the consumers alive on each delivery shard, not the
/// destinations (docs/adr/0010): past it destinations are still created, and the
/// deliveries of those without a consumer wait in the shard until idle consumers are
/// removed and make room; every event is delivered. The limit is visible as a metric.
#[tokio::test]
async fn destinations_past_the_consumer_limit_wait_for_room_on_their_shard() {
    const LIMIT: i32 = 2;
    const DESTINATIONS: usize = 5;
    let app = crate::common::spawn_app_with(|cfg| {
        cfg.events.max_consumers = LIMIT;
        cfg.events.delivery_shards = 1;
        cfg.delivery.consumer_idle = Duration::from_secs(1);
    })
    .await;
    let receiver = Receiver::start().await;
    let mut created = Vec::new();
    for i in 0..DESTINATIONS {
        let (status, answer) = app
            .create_destination(json!({
                "id": format!("limit-{i}"),
                "url": receiver.url("/hook"),
                "event_types": [format!("limit.d{i}")],
            }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        created.push(answer["id"].as_str().expect("id").to_string());
    }
    for i in 0..DESTINATIONS {
        send(
            &app,
            json!({"type": format!("limit.d{i}"), "data": {"i": i}}),
        )
        .await;
    }
    let got = receiver
        .collect(DESTINATIONS, Duration::from_secs(40))
        .await;
    let types: BTreeSet<String> = got
        .iter()
        .filter_map(|r| r.header("hs-event-type").map(str::to_string))
        .collect();
    assert_eq!(types.len(), DESTINATIONS, "every destination got its event");

    let js = jetstream::new(app.nats.client().await);
    let shard = js.get_stream("HS_DLV_0").await.expect("HS_DLV_0");
    assert_eq!(
        shard.cached_info().config.max_consumers,
        LIMIT,
        "the shard's limit comes from config"
    );
    let limit = app
        .scrape()
        .await
        .value("hookstream_stream_consumer_limit", &[]);
    assert_eq!(limit, f64::from(LIMIT));
}
