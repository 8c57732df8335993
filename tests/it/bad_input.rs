//! The contract's "bad input" table: every refused request answers the right status and
//! error code in the `{"error":{"code","message"}}` shape, and changes nothing: no event
//! on `HS_EVENTS`, no destination or consumer added or altered, nothing delivered.
//! Also NATS going away: 503 with `Retry-After`, never a hang or a 500, and recovery
//! without a restart of the service.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::TryStreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde_json::{Value, json};

use crate::common::steps::eventually;
use crate::common::{Receiver, TestApp, spawn_app, spawn_app_with};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Asserts the status and the error shape: `error.code` as expected and a non-empty
/// `error.message`.
#[track_caller]
fn assert_error(what: &str, got: &(StatusCode, Value), status: u16, code: &str) {
    let (got_status, body) = got;
    assert_eq!(
        got_status.as_u16(),
        status,
        "{what}: expected {status} {code}, got {got_status} {body}"
    );
    assert_eq!(
        body["error"]["code"], code,
        "{what}: wrong error code in {body}"
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !message.trim().is_empty(),
        "{what}: error.message missing or empty in {body}"
    );
}

/// What a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    events: u64,
    /// Destination consumers (`dest_*` on the delivery shards `HS_DLV_*`).
    consumers: Vec<String>,
    /// The whole destination list, timestamps included, so an "update that failed" that
    /// still touched `updated_at` shows up.
    destinations: Value,
}

async fn snapshot(app: &TestApp) -> Snapshot {
    let js = jetstream::new(app.nats.client().await);
    let stream = js.get_stream("HS_EVENTS").await.expect("HS_EVENTS exists");
    let info = stream.get_info().await.expect("HS_EVENTS info");
    let shards: Vec<String> = js
        .stream_names()
        .try_collect::<Vec<String>>()
        .await
        .expect("list streams")
        .into_iter()
        .filter(|name| name.starts_with("HS_DLV_"))
        .collect();
    let mut consumers = Vec::new();
    for shard in shards {
        let shard = js.get_stream(&shard).await.expect("shard");
        consumers.extend(
            shard
                .consumer_names()
                .try_collect::<Vec<String>>()
                .await
                .expect("list shard consumers")
                .into_iter()
                .filter(|name| name.starts_with("dest_")),
        );
    }
    consumers.sort();
    let (status, list) = app.get("/v1/destinations?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "list destinations: {list}");
    Snapshot {
        events: info.state.messages,
        consumers,
        destinations: list["data"].clone(),
    }
}

/// A destination for every event type at `receiver`, so that anything a refused request
/// published by mistake would be delivered and seen.
async fn catch_all_destination(app: &TestApp, receiver: &Receiver) -> String {
    let (status, body) = app
        .create_destination(json!({
            "url": receiver.url("/hook"),
            "event_types": [">"],
            "timeout_ms": 2000,
            "retry": {"schedule_ms": [200], "max_attempts": 2},
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "create destination: {body}");
    body["id"].as_str().expect("destination id").to_string()
}

/// Posts `canary` (which must be accepted) and asserts it is the one and only request the
/// receiver gets: a refused request before it must not have been delivered.
async fn assert_only_canary_delivered(app: &TestApp, receiver: &Receiver, canary: Value) {
    let (status, body) = app.post_event(canary).await;
    assert_eq!(status, StatusCode::ACCEPTED, "canary event: {body}");
    let canary_id = body["id"].as_str().expect("canary id").to_string();
    let first = receiver
        .recv_timeout(DELIVERY_TIMEOUT)
        .await
        .expect("the canary event is delivered");
    assert_eq!(
        first.header("webhook-id"),
        Some(canary_id.as_str()),
        "something other than the canary was delivered first: {:?}",
        first.body
    );
    if let Some(extra) = receiver.recv_timeout(Duration::from_millis(300)).await {
        panic!(
            "unexpected extra delivery {:?}: {:?}",
            extra.header("webhook-id"),
            extra.body
        );
    }
}

/// A JSON event body of exactly `len` bytes.
fn event_of_len(len: usize) -> Vec<u8> {
    let empty = json!({"type": "canary.ping", "data": {"pad": ""}}).to_string();
    assert!(len >= empty.len());
    let padded = json!({"type": "canary.ping", "data": {"pad": "x".repeat(len - empty.len())}});
    let bytes = serde_json::to_vec(&padded).expect("serialise");
    assert_eq!(bytes.len(), len);
    bytes
}

#[tokio::test]
async fn malformed_events_are_refused_with_their_codes_and_publish_nothing() {
    let app = spawn_app_with(|cfg| cfg.api.body_limit_bytes = 4096).await;
    let receiver = Receiver::start().await;
    catch_all_destination(&app, &receiver).await;
    let before = snapshot(&app).await;

    let json = "application/json";
    // (what, path, content type, body, status, code)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "broken JSON",
            "/v1/events",
            json,
            br#"{"type": "order.created", "data": "#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "trailing garbage",
            "/v1/events",
            json,
            br#"{"type":"order.created","data":{}} x"#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "unknown field",
            "/v1/events",
            json,
            br#"{"type":"order.created","data":{},"colour":"red"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "empty token in type",
            "/v1/events",
            json,
            br#"{"type":"order..x","data":{}}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "wildcard * in type",
            "/v1/events",
            json,
            br#"{"type":"a.*","data":{}}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "wildcard > in type",
            "/v1/events",
            json,
            br#"{"type":"a.>","data":{}}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "space in type",
            "/v1/events",
            json,
            br#"{"type":"order created","data":{}}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "17 tokens in type",
            "/v1/events",
            json,
            format!(r#"{{"type":"{}","data":{{}}}}"#, vec!["a"; 17].join(".")).into_bytes(),
            400,
            "invalid_request",
        ),
        (
            "upper-case tenant",
            "/v1/events",
            json,
            br#"{"type":"order.created","data":{},"tenant":"Acme"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "event id with a dot",
            "/v1/events",
            json,
            br#"{"type":"order.created","data":{},"id":"a.b"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "missing type",
            "/v1/events",
            json,
            br#"{"data":{}}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "type of the wrong JSON type",
            "/v1/events",
            json,
            br#"{"type":42,"data":{}}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "not an object",
            "/v1/events",
            json,
            br#"["order.created"]"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "body over the limit",
            "/v1/events",
            json,
            event_of_len(5000),
            413,
            "payload_too_large",
        ),
        (
            "batch body over the limit",
            "/v1/events/batch",
            json,
            format!(
                r#"{{"events":[{}]}}"#,
                String::from_utf8(event_of_len(5000)).expect("utf-8")
            )
            .into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "text/plain",
            "/v1/events",
            "text/plain",
            br#"{"type":"order.created","data":{}}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "form content type",
            "/v1/events",
            "application/x-www-form-urlencoded",
            b"type=order.created".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "broken JSON in a batch",
            "/v1/events/batch",
            json,
            br#"{"events":[{"type":"a.b","data":{}}"#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "batch without events",
            "/v1/events/batch",
            json,
            br#"{"events":[]}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "batch with an unknown top-level field",
            "/v1/events/batch",
            json,
            br#"{"events":[{"type":"a.b","data":{}}],"x":1}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "empty body",
            "/v1/events",
            json,
            Vec::new(),
            400,
            "invalid_json",
        ),
        (
            "invalid UTF-8 in a string",
            "/v1/events",
            json,
            b"{\"type\":\"a.b\",\"data\":\"\xff\xfe\"}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "duplicate key",
            "/v1/events",
            json,
            br#"{"type":"a.b","type":"c.d","data":{}}"#.to_vec(),
            400,
            "invalid_request",
        ),
    ];
    for (what, path, content_type, body, status, code) in cases {
        let got = app.raw_post(path, content_type, body).await;
        assert_error(what, &got, status, code);
    }

    // No content type at all is as wrong as a wrong one.
    let response = app
        .client
        .post(format!("{}/v1/events", app.base_url()))
        .body(r#"{"type":"order.created","data":{}}"#)
        .send()
        .await
        .expect("request without content type");
    let status = response.status();
    let body: Value =
        serde_json::from_slice(&response.bytes().await.expect("body")).unwrap_or(Value::Null);
    assert_error(
        "no content type",
        &(status, body),
        415,
        "unsupported_media_type",
    );

    for (what, key) in [
        ("Idempotency-Key over 255 characters", "k".repeat(256)),
        ("empty Idempotency-Key", String::new()),
    ] {
        let got = app
            .post_event_with_headers(
                json!({"type": "order.created", "data": {}}),
                &[("Idempotency-Key", key.as_str())],
            )
            .await;
        assert_error(what, &got, 400, "invalid_request");
    }

    assert_eq!(
        snapshot(&app).await,
        before,
        "a refused event changed state"
    );
    // A body of exactly the limit is still accepted: the limit is not off by one.
    let at_limit: Value = serde_json::from_slice(&event_of_len(4096)).expect("JSON");
    assert_only_canary_delivered(&app, &receiver, at_limit).await;
}

#[tokio::test]
async fn malformed_destinations_are_refused_and_create_or_change_nothing() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let existing = catch_all_destination(&app, &receiver).await;
    let before = snapshot(&app).await;

    let url = receiver.url("/hook");
    let valid = || json!({"url": url, "event_types": ["order.created"]});
    let with = |key: &str, value: Value| {
        let mut body = valid();
        body[key] = value;
        body
    };
    let json_cases: Vec<(&str, Value)> = vec![
        ("unknown field", with("colour", json!("red"))),
        (
            "unknown field in retry",
            with(
                "retry",
                json!({"schedule_ms": [100], "max_attempts": 2, "colour": 1}),
            ),
        ),
        (
            "empty token in pattern",
            with("event_types", json!(["order..x"])),
        ),
        (
            "> not last in pattern",
            with("event_types", json!(["order.>.x"])),
        ),
        (
            "partial wildcard in pattern",
            with("event_types", json!(["order.cre*"])),
        ),
        ("no patterns", with("event_types", json!([]))),
        ("upper-case tenant", with("tenant", json!("Acme"))),
        ("ftp URL", with("url", json!("ftp://example.com/hook"))),
        ("file URL", with("url", json!("file:///etc/passwd"))),
        ("not a URL", with("url", json!("not a url"))),
        ("missing url", json!({"event_types": ["order.created"]})),
        (
            "reserved header webhook-id",
            with("headers", json!({"webhook-id": "forged"})),
        ),
        (
            "reserved header in another case",
            with("headers", json!({"Webhook-Signature": "v1,forged"})),
        ),
        (
            "retry with schedule and backoff",
            with(
                "retry",
                json!({
                    "schedule_ms": [100, 200],
                    "backoff": {"base_ms": 100, "factor": 2.0, "max_ms": 1000},
                    "max_attempts": 3,
                }),
            ),
        ),
        (
            "retry with neither",
            with("retry", json!({"max_attempts": 3})),
        ),
        ("zero max_in_flight", with("max_in_flight", json!(0))),
        ("negative timeout", with("timeout_ms", json!(-1))),
    ];
    for (what, body) in json_cases {
        let got = app.create_destination(body).await;
        assert_error(what, &got, 400, "invalid_request");
    }
    let got = app.create_destination(with("id", json!(existing))).await;
    assert_error("an id that exists", &got, 409, "conflict");
    let got = app
        .create_destination(with("id", json!("dst.dotted")))
        .await;
    assert_error("an id with a dot", &got, 400, "invalid_request");
    let got = app
        .raw_post("/v1/destinations", "application/json", r#"{"url": "#)
        .await;
    assert_error("broken JSON", &got, 400, "invalid_json");
    let got = app
        .raw_post(
            "/v1/destinations",
            "text/plain",
            serde_json::to_vec(&valid()).expect("serialise"),
        )
        .await;
    assert_error("text/plain", &got, 415, "unsupported_media_type");

    // The same mistakes in an update leave the existing destination as it was.
    let path = format!("/v1/destinations/{existing}");
    let patch_cases: Vec<(&str, Value)> = vec![
        ("unknown field", json!({"colour": "red"})),
        ("ftp URL", json!({"url": "ftp://example.com/"})),
        ("bad pattern", json!({"event_types": ["a..b"]})),
        ("reserved header", json!({"headers": {"webhook-id": "x"}})),
        (
            "retry with schedule and backoff",
            json!({"retry": {
                "schedule_ms": [1],
                "backoff": {"base_ms": 1, "factor": 2.0, "max_ms": 10},
                "max_attempts": 2,
            }}),
        ),
    ];
    for (what, body) in patch_cases {
        let got = app.patch(&path, body).await;
        assert_error(&format!("PATCH {what}"), &got, 400, "invalid_request");
    }
    let got = app
        .put(
            &path,
            json!({"url": "ftp://example.com/", "event_types": [">"]}),
        )
        .await;
    assert_error("PUT ftp URL", &got, 400, "invalid_request");

    assert_eq!(
        snapshot(&app).await,
        before,
        "a refused destination request changed state"
    );
    // The existing destination still delivers as before.
    assert_only_canary_delivered(&app, &receiver, json!({"type": "canary.ping", "data": {}})).await;
}

#[tokio::test]
async fn private_loopback_and_link_local_urls_are_refused_by_default() {
    let app = spawn_app_with(|cfg| {
        cfg.security.allow_private_networks = false;
        cfg.security.ssrf_allowlist = Vec::new();
    })
    .await;
    let before = snapshot(&app).await;

    for url in [
        "http://127.0.0.1/hook",
        "http://127.0.0.1:9999/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/",
        "http://LOCALHOST:8080/",
        "http://api.localhost/",
        // Fully qualified (a trailing dot): the same host.
        "http://localhost./",
        "http://api.localhost.:8080/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://0.0.0.0/",
        // Other spellings of 127.0.0.1 that URL parsers normalise.
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://127.1/",
    ] {
        let got = app
            .create_destination(json!({"url": url, "event_types": ["a.b"]}))
            .await;
        assert_error(url, &got, 400, "invalid_request");
    }
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn allowlisted_private_networks_are_admitted_and_delivered_to() {
    let app = spawn_app_with(|cfg| {
        cfg.security.allow_private_networks = false;
        cfg.security.ssrf_allowlist = vec!["127.0.0.0/8".to_string()];
    })
    .await;
    let receiver = Receiver::start().await;

    for url in [
        receiver.url("/hook"),
        format!("http://localhost:{}/hook", receiver.address().port()),
    ] {
        let (status, body) = app
            .create_destination(json!({"url": url, "event_types": ["a.b"]}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {body}");
    }
    for url in [
        "http://169.254.169.254/",
        "http://10.0.0.1/",
        "http://[::1]/",
    ] {
        let got = app
            .create_destination(json!({"url": url, "event_types": ["a.b"]}))
            .await;
        assert_error(url, &got, 400, "invalid_request");
    }

    // The send-time guard admits the allow-listed address too: both destinations get it.
    let (status, body) = app.post_event(json!({"type": "a.b", "data": {}})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let got = receiver.collect(2, DELIVERY_TIMEOUT).await;
    assert_eq!(got.len(), 2, "deliveries to allow-listed 127.0.0.1");
    for request in &got {
        assert_eq!(request.header("webhook-id"), body["id"].as_str());
    }
}

/// The save-time check sees only the URL; a host name that resolves to loopback passes it,
/// and the resolver guard must stop the request.
#[tokio::test]
async fn a_host_name_resolving_to_loopback_is_never_sent_to() {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let resolves_to_loopback = !hostname.is_empty()
        && !hostname.eq_ignore_ascii_case("localhost")
        && std::net::ToSocketAddrs::to_socket_addrs(&(hostname.as_str(), 80))
            .is_ok_and(|mut addrs| addrs.any(|a| a.ip().is_loopback()));
    if !resolves_to_loopback {
        eprintln!("skipped: host name {hostname:?} does not resolve to a loopback address");
        return;
    }
    let app = spawn_app_with(|cfg| {
        cfg.security.allow_private_networks = false;
        cfg.security.ssrf_allowlist = Vec::new();
    })
    .await;
    let receiver = Receiver::start().await;
    let url = format!("http://{hostname}:{}/hook", receiver.address().port());
    let (status, body) = app
        .create_destination(json!({
            "url": url,
            "event_types": ["a.b"],
            "retry": {"schedule_ms": [], "max_attempts": 1},
        }))
        .await;
    if status != StatusCode::CREATED {
        // Refusing it at save time (by resolving) is as good.
        assert_error(&url, &(status, body), 400, "invalid_request");
        return;
    }
    let (status, body) = app.post_event(json!({"type": "a.b", "data": {}})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let event_id = body["id"].as_str().expect("id").to_string();

    // The attempt is recorded as refused by the guard...
    let attempt = eventually(DELIVERY_TIMEOUT, async || {
        let (_, attempts) = app.get(&format!("/v1/events/{event_id}/attempts")).await;
        attempts["destinations"][0]["attempts"][0]
            .as_object()
            .cloned()
            .ok_or_else(|| format!("no attempt recorded: {attempts}"))
    })
    .await;
    let error = attempt["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("SSRF") || error.contains("private"),
        "attempt not refused by the SSRF guard: {attempt:?}"
    );
    // ...and nothing reached the receiver.
    assert!(
        receiver
            .recv_timeout(Duration::from_millis(500))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn unknown_ids_and_routes_answer_404_with_the_error_shape() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    catch_all_destination(&app, &receiver).await;
    let before = snapshot(&app).await;

    let unknown = "dst_01J0000000000000000000000";
    let valid = json!({"url": receiver.url("/x"), "event_types": ["a.b"]});
    let checks: Vec<(String, (StatusCode, Value))> = vec![
        (
            "GET destination".into(),
            app.get(&format!("/v1/destinations/{unknown}")).await,
        ),
        (
            "PATCH destination".into(),
            app.patch(
                &format!("/v1/destinations/{unknown}"),
                json!({"enabled": false}),
            )
            .await,
        ),
        (
            "PUT destination".into(),
            app.put(&format!("/v1/destinations/{unknown}"), valid.clone())
                .await,
        ),
        (
            "DELETE destination".into(),
            app.delete(&format!("/v1/destinations/{unknown}")).await,
        ),
        (
            "pause destination".into(),
            app.post(&format!("/v1/destinations/{unknown}/pause"), json!({}))
                .await,
        ),
        (
            "test destination".into(),
            app.post(&format!("/v1/destinations/{unknown}/test"), json!({}))
                .await,
        ),
        (
            "rotate secret".into(),
            app.post(
                &format!("/v1/destinations/{unknown}/rotate-secret"),
                json!({}),
            )
            .await,
        ),
        (
            "GET destination with an impossible id".into(),
            app.get("/v1/destinations/no.such.id").await,
        ),
        (
            "GET event".into(),
            app.get("/v1/events/evt_01J0000000000000000000000").await,
        ),
        (
            "GET event attempts".into(),
            app.get("/v1/events/evt_01J0000000000000000000000/attempts")
                .await,
        ),
        (
            "GET event with an impossible id".into(),
            app.get("/v1/events/no.such").await,
        ),
        ("unknown route".into(), app.get("/v1/nothing-here").await),
        (
            "unknown route under events".into(),
            app.post("/v1/events/x/y/z", json!({})).await,
        ),
    ];
    for (what, got) in &checks {
        assert_error(what, got, 404, "not_found");
    }
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn an_event_id_taken_by_another_tenant_is_refused_with_409_and_stores_nothing() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (status, body) = app
        .create_destination(json!({
            "url": receiver.url("/globex"),
            "tenant": "globex",
            "event_types": [">"],
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .post_event(json!({"id": "shared-1", "tenant": "acme", "type": "a.b", "data": {}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let before = snapshot(&app).await;

    let got = app
        .post_event(json!({"id": "shared-1", "tenant": "globex", "type": "a.b", "data": {}}))
        .await;
    assert_error("the same id for another tenant", &got, 409, "conflict");

    assert_eq!(snapshot(&app).await, before);
    // Globex's destination never sees acme's event or the refused one.
    assert_only_canary_delivered(
        &app,
        &receiver,
        json!({"tenant": "globex", "type": "canary.ping", "data": {}}),
    )
    .await;
}

#[tokio::test]
async fn a_batch_over_the_maximum_is_refused_whole() {
    let app = spawn_app_with(|cfg| cfg.events.max_batch = 3).await;
    let receiver = Receiver::start().await;
    catch_all_destination(&app, &receiver).await;
    let before = snapshot(&app).await;

    let events: Vec<Value> = (0..4)
        .map(|i| json!({"type": "order.created", "data": {"i": i}}))
        .collect();
    let got = app.post_batch(json!({ "events": events })).await;
    assert_error(
        "batch of 4 over a maximum of 3",
        &got,
        400,
        "invalid_request",
    );

    assert_eq!(
        snapshot(&app).await,
        before,
        "part of a refused batch was stored"
    );
    assert_only_canary_delivered(&app, &receiver, json!({"type": "canary.ping", "data": {}})).await;
}

#[tokio::test]
async fn a_batch_with_bad_items_accepts_only_the_good_ones() {
    let app = spawn_app_with(|cfg| cfg.events.max_batch = 5).await;
    let receiver = Receiver::start().await;
    catch_all_destination(&app, &receiver).await;
    let before = snapshot(&app).await;

    let (status, body) = app
        .post_batch(json!({"events": [
            {"type": "order.created", "data": {"i": 0}},
            {"type": "order..created", "data": {"i": 1}},
            {"type": "order.created", "data": {"i": 2}, "colour": "red"},
            {"type": "order.created", "data": {"i": 3}, "tenant": "Acme"},
            {"type": "order.created", "data": {"i": 4}},
        ]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().expect("results array");
    assert_eq!(results.len(), 5, "one result per item: {body}");
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, [202, 400, 400, 400, 202], "{body}");
    for bad in &results[1..4] {
        assert_eq!(bad["error"]["code"], "invalid_request", "{bad}");
        assert!(
            bad["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{bad}"
        );
        assert!(bad.get("id").is_none_or(Value::is_null), "{bad}");
    }
    let accepted: Vec<&str> = [&results[0], &results[4]]
        .iter()
        .map(|r| r["id"].as_str().expect("accepted item has an id"))
        .collect();

    let after = snapshot(&app).await;
    assert_eq!(
        after.events,
        before.events + 2,
        "only the good items are stored"
    );
    let mut delivered: Vec<String> = receiver
        .collect(2, DELIVERY_TIMEOUT)
        .await
        .iter()
        .map(|r| r.header("webhook-id").unwrap_or_default().to_string())
        .collect();
    delivered.sort();
    let mut expected: Vec<String> = accepted.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(delivered, expected);
    assert!(
        receiver
            .recv_timeout(Duration::from_millis(300))
            .await
            .is_none()
    );
}

/// POSTs JSON with the app's client and returns status, headers and body, giving up
/// (failing the test) after `limit`: a request must never hang while NATS is away.
async fn post_bounded(
    app: &TestApp,
    path: &str,
    body: &Value,
    limit: Duration,
) -> (StatusCode, HeaderMap, Value) {
    let request = app
        .client
        .post(format!("{}{path}", app.base_url()))
        .header(CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).expect("serialise"));
    send_bounded(request, path, limit).await
}

async fn send_bounded(
    request: reqwest::RequestBuilder,
    what: &str,
    limit: Duration,
) -> (StatusCode, HeaderMap, Value) {
    let started = Instant::now();
    let response = tokio::time::timeout(limit, async {
        let response = request.send().await.expect("request to the app");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("response body");
        (status, headers, bytes)
    })
    .await
    .unwrap_or_else(|_| panic!("{what} did not answer within {limit:?} while NATS was down"));
    let (status, headers, bytes) = response;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    eprintln!("{what}: {status} after {:?}", started.elapsed());
    (status, headers, body)
}

#[track_caller]
fn assert_unavailable(what: &str, got: &(StatusCode, HeaderMap, Value)) {
    let (status, headers, body) = got;
    assert_error(what, &(*status, body.clone()), 503, "broker_unavailable");
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "{what}: 503 without a usable Retry-After: {headers:?}"
    );
}

#[tokio::test]
async fn nats_outage_answers_503_with_retry_after_and_the_service_recovers_by_itself() {
    const LIMIT: Duration = Duration::from_secs(10);
    let app = spawn_app_with(|cfg| cfg.delivery.ack_wait_margin = Duration::from_secs(1)).await;
    let receiver = Receiver::start().await;
    let (status, body) = app
        .create_destination(json!({
            "url": receiver.url("/hook"),
            "event_types": ["order.*"],
            "timeout_ms": 1000,
            "retry": {"schedule_ms": [2000, 500], "max_attempts": 50},
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // An event accepted before the outage, still waiting for its retry when NATS goes.
    receiver.script([500]);
    let (status, body) = app
        .post_event(json!({"type": "order.created", "data": {"n": "before"}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let before_id = body["id"].as_str().expect("id").to_string();
    let first = receiver
        .recv_timeout(DELIVERY_TIMEOUT)
        .await
        .expect("first attempt");
    assert_eq!(first.header("webhook-id"), Some(before_id.as_str()));

    app.nats.stop();

    // Readiness notices at once.
    eventually(LIMIT, async || {
        let (status, _, body) = send_bounded(
            app.client.get(format!("{}/readyz", app.base_url())),
            "GET /readyz",
            LIMIT,
        )
        .await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return Ok(());
        }
        assert_eq!(status, StatusCode::OK, "readyz: {body}");
        Err("readyz still 200 with NATS down".to_string())
    })
    .await;

    // Liveness is not readiness: the process is fine, only NATS is away.
    let (status, _, body) = send_bounded(
        app.client.get(format!("{}/healthz", app.base_url())),
        "GET /healthz",
        LIMIT,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "healthz with NATS down: {body}");

    // Every write answers 503 with Retry-After within the limit, concurrently.
    let event = json!({"type": "order.created", "data": {"n": "during"}});
    let destination = json!({"url": receiver.url("/other"), "event_types": ["x.y"]});
    let (ingest, create, list) = tokio::join!(
        post_bounded(&app, "/v1/events", &event, LIMIT),
        post_bounded(&app, "/v1/destinations", &destination, LIMIT),
        send_bounded(
            app.client
                .get(format!("{}/v1/destinations", app.base_url())),
            "GET /v1/destinations",
            LIMIT
        ),
    );
    assert_unavailable("POST /v1/events", &ingest);
    assert_unavailable("POST /v1/destinations", &create);
    assert_unavailable("GET /v1/destinations", &list);

    // A batch of which nothing could be stored is refused whole, like a single event, so
    // the client retries it whole after Retry-After; an invalid item does not change that.
    let batch = post_bounded(
        &app,
        "/v1/events/batch",
        &json!({ "events": [event.clone(), event.clone()] }),
        LIMIT,
    )
    .await;
    assert_unavailable("POST /v1/events/batch", &batch);
    let mixed = post_bounded(
        &app,
        "/v1/events/batch",
        &json!({ "events": [event.clone(), {"type": "bad type!"}] }),
        LIMIT,
    )
    .await;
    assert_unavailable("POST /v1/events/batch with an invalid item", &mixed);

    receiver.set_status(200);
    app.nats.restart().await;

    // The service takes events again without being restarted.
    let after_id = eventually(Duration::from_secs(30), async || {
        let event = json!({"type": "order.created", "data": {"n": "after"}});
        let got = post_bounded(&app, "/v1/events", &event, LIMIT).await;
        if got.0 == StatusCode::ACCEPTED {
            return Ok(got.2["id"].as_str().expect("id").to_string());
        }
        assert_unavailable("POST /v1/events while reconnecting", &got);
        Err("events still refused after NATS came back".to_string())
    })
    .await;
    app.wait_ready().await;

    // Both the event from before the outage and the one after are delivered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut missing: Vec<String> = vec![before_id, after_id];
    while !missing.is_empty() {
        let Some(request) = receiver
            .recv_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        else {
            panic!("not delivered after NATS came back: {missing:?}");
        };
        if let Some(id) = request.header("webhook-id") {
            missing.retain(|m| m != id);
        }
    }
}

#[tokio::test]
async fn a_wrong_method_answers_405_with_the_error_shape() {
    let app = spawn_app().await;
    let before = snapshot(&app).await;
    let response = app
        .client
        .delete(format!("{}/v1/events", app.base_url()))
        .send()
        .await
        .expect("DELETE /v1/events");
    let status = response.status();
    let bytes = response.bytes().await.expect("body");
    let body: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert!(
        body["error"]["code"].is_string() && body["error"]["message"].is_string(),
        "405 without the error shape: {body:?}"
    );
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn a_full_event_stream_answers_503_stream_full_with_retry_after() {
    let app = spawn_app_with(|cfg| cfg.events.max_bytes = 4096).await;
    let event = json!({"type": "order.created", "data": {"pad": "x".repeat(500)}});
    let mut accepted = 0;
    let full = loop {
        let got = post_bounded(&app, "/v1/events", &event, Duration::from_secs(10)).await;
        if got.0 != StatusCode::ACCEPTED {
            break got;
        }
        accepted += 1;
        assert!(accepted < 50, "4 KiB stream took 50 events of 500 bytes");
    };
    assert!(accepted > 0, "not even one event fitted");
    let before = snapshot(&app).await;
    let (status, headers, body) = &full;
    assert_error("full stream", &(*status, body.clone()), 503, "stream_full");
    assert!(
        headers.get(RETRY_AFTER).is_some(),
        "stream_full without Retry-After: {headers:?}"
    );
    // Still full, still refused, nothing stored.
    let again = post_bounded(&app, "/v1/events", &event, Duration::from_secs(10)).await;
    assert_error(
        "full stream again",
        &(again.0, again.2.clone()),
        503,
        "stream_full",
    );
    assert_eq!(snapshot(&app).await, before);
}
