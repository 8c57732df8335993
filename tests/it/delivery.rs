//! What a receiver gets: the exact bytes, every documented header, a Standard Webhooks
//! signature that verifies with our own HMAC and with the reference Python library, the
//! body and method each destination asks for, and exactly the events each destination
//! subscribed to — no more, no fewer.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::steps::{assert_quiet, eventually};
use crate::common::{
    Receiver, Request, TestApp, publish_with_python_nats, spawn_app, verify_with_python,
};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we listen to show that nothing more arrives.
const QUIET: Duration = Duration::from_millis(600);

/// Creates a destination; returns `(id, secret)` from the 201 answer.
async fn create(app: &TestApp, destination: Value) -> (String, String) {
    let (status, body) = app.create_destination(destination).await;
    assert_eq!(status, StatusCode::CREATED, "create destination: {body}");
    let id = body["id"].as_str().expect("id in the answer").to_string();
    let secret = body["secret"]
        .as_str()
        .expect("secret in the create answer")
        .to_string();
    (id, secret)
}

/// Posts an event and returns its id; the app must answer 202.
async fn send(app: &TestApp, event: Value) -> String {
    let (status, body) = app.post_event(event).await;
    assert_eq!(status, StatusCode::ACCEPTED, "post event: {body}");
    body["id"].as_str().expect("id in the answer").to_string()
}

/// Posts raw JSON bytes (so that the test controls every byte of `data`).
async fn send_raw(app: &TestApp, raw: &str) -> String {
    let (status, body) = app
        .raw_post("/v1/events", "application/json", raw.to_string())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "post event: {body}");
    body["id"].as_str().expect("id in the answer").to_string()
}

async fn next_request(receiver: &Receiver, what: &str) -> Request {
    receiver
        .recv_timeout(DELIVERY_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("{what}: no request within {DELIVERY_TIMEOUT:?}"))
}

/// `v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`, computed here from the
/// Standard Webhooks specification, not with hookstream's signer.
fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("secret starts whsec_"))
        .expect("secret is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The request carries exactly one signature, and it is the one `secret` gives.
#[track_caller]
fn assert_signed_by(request: &Request, secret: &str) {
    let id = request.header("webhook-id").expect("webhook-id");
    let timestamp = request
        .header("webhook-timestamp")
        .expect("webhook-timestamp");
    let signature = request
        .header("webhook-signature")
        .expect("webhook-signature");
    assert_eq!(
        signature,
        expected_signature(secret, id, timestamp, &request.body),
        "signature of {id} does not match HMAC-SHA256 over id.timestamp.body"
    );
}

#[tokio::test]
async fn envelope_is_delivered_byte_exact_with_every_documented_header() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    create(
        &app,
        json!({"url": receiver.url("/hooks/orders"), "event_types": ["order.created"]}),
    )
    .await;

    // `data` with odd spacing, number forms and escapes: it must arrive byte for byte,
    // never re-serialised.
    let data = r#"{"z":1,  "a":[1.50, 2e3, -0.0],"s":"caf\u00e9 ✓ \"q\"","n":null}"#;
    let before = Utc::now();
    let id = send_raw(
        &app,
        &format!(
            r#"{{"type":"order.created","source":"shop-1","occurred_at":"2024-05-01T12:00:00Z","data":{data}}}"#
        ),
    )
    .await;
    let request = next_request(&receiver, "the event").await;
    let after = Utc::now();

    assert_eq!(request.method, "POST");
    assert_eq!(request.uri, "/hooks/orders");

    // The body is the message stored on HS_EVENTS, unchanged.
    let js = jetstream::new(app.nats.client().await);
    let stored = js
        .get_stream("HS_EVENTS")
        .await
        .expect("HS_EVENTS")
        .get_last_raw_message_by_subject("hs.ev.default.order.created")
        .await
        .expect("the event on hs.ev.default.order.created");
    assert_eq!(
        request.body, stored.payload,
        "delivered body differs from the stored envelope"
    );
    assert_eq!(
        stored.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some(id.as_str())
    );
    assert_eq!(
        stored.headers.get("Hs-Event-Type").map(|v| v.as_str()),
        Some("order.created")
    );
    assert_eq!(
        stored.headers.get("Hs-Tenant").map(|v| v.as_str()),
        Some("default")
    );

    let body = std::str::from_utf8(&request.body).expect("UTF-8 body");
    assert!(
        body.contains(&format!(r#""data":{data}"#)),
        "data not forwarded verbatim: {body}"
    );
    let envelope = request.json();
    let keys: BTreeSet<&str> = envelope
        .as_object()
        .expect("envelope is an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "id",
            "tenant",
            "type",
            "source",
            "occurred_at",
            "received_at",
            "data"
        ])
    );
    assert_eq!(envelope["id"], id.as_str());
    assert_eq!(envelope["tenant"], "default");
    assert_eq!(envelope["type"], "order.created");
    assert_eq!(envelope["source"], "shop-1");
    let occurred: DateTime<Utc> = envelope["occurred_at"]
        .as_str()
        .expect("occurred_at")
        .parse()
        .expect("occurred_at is RFC 3339");
    assert_eq!(
        occurred,
        "2024-05-01T12:00:00Z".parse::<DateTime<Utc>>().unwrap()
    );
    let received: DateTime<Utc> = envelope["received_at"]
        .as_str()
        .expect("received_at")
        .parse()
        .expect("received_at is RFC 3339");
    assert!(
        before <= received && received <= after,
        "received_at {received} not within [{before}, {after}]"
    );

    assert_eq!(request.header("webhook-id"), Some(id.as_str()));
    let timestamp: i64 = request
        .header("webhook-timestamp")
        .expect("webhook-timestamp")
        .parse()
        .expect("webhook-timestamp is unix seconds");
    assert!(
        before.timestamp() - 1 <= timestamp && timestamp <= after.timestamp() + 1,
        "webhook-timestamp {timestamp} not within the test's window"
    );
    let signature = request
        .header("webhook-signature")
        .expect("webhook-signature");
    assert!(
        signature.starts_with("v1,") && !signature.contains(' '),
        "one v1 signature expected: {signature}"
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.header("user-agent"),
        Some(format!("hookstream/{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(request.header("hs-event-type"), Some("order.created"));
    assert_eq!(request.header("hs-attempt"), Some("1"));

    assert_quiet(receiver.recv_timeout(QUIET).await, "after the one event");
}

#[tokio::test]
async fn signature_verifies_with_our_hmac_and_the_reference_library() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (_, secret) = create(
        &app,
        json!({"url": receiver.url("/hook"), "event_types": ["user.*"]}),
    )
    .await;
    assert!(secret.starts_with("whsec_"), "{secret}");

    send(
        &app,
        json!({"type": "user.signed_up", "data": {"email": "a@example.com", "plan": "pro"}}),
    )
    .await;
    let request = next_request(&receiver, "the event").await;

    assert_signed_by(&request, &secret);
    let headers = request.header_pairs();
    verify_with_python(&secret, &headers, &request.body)
        .await
        .unwrap_or_else(|why| panic!("reference library rejects the delivery: {why}"));

    // The reference library is not a rubber stamp: a changed body or another secret fail.
    let mut tampered = request.body.to_vec();
    tampered.extend_from_slice(b" ");
    assert!(
        verify_with_python(&secret, &headers, &tampered)
            .await
            .is_err(),
        "a tampered body must not verify"
    );
    let other_secret = format!("whsec_{}", BASE64.encode([7u8; 32]));
    assert!(
        verify_with_python(&other_secret, &headers, &request.body)
            .await
            .is_err(),
        "another secret must not verify"
    );
}

#[tokio::test]
async fn a_secret_given_on_create_is_the_one_that_signs() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let secret = format!(
        "whsec_{}",
        BASE64.encode(b"0123456789abcdef0123456789abcdef")
    );
    let (_, answered) = create(
        &app,
        json!({"url": receiver.url("/hook"), "event_types": [">"], "secret": secret}),
    )
    .await;
    assert_eq!(answered, secret);

    send(&app, json!({"type": "ping", "data": {}})).await;
    let request = next_request(&receiver, "the event").await;
    assert_signed_by(&request, &secret);
    verify_with_python(&secret, &request.header_pairs(), &request.body)
        .await
        .expect("verifies with the given secret");
}

#[tokio::test]
async fn data_body_mode_sends_only_the_data_bytes() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (_, secret) = create(
        &app,
        json!({"url": receiver.url("/data"), "event_types": ["order.*"], "body": "data"}),
    )
    .await;

    let data = r#"{ "order" : 42 , "items":[ {"sku":"A-1","qty":2} ],"note":"\u263a" }"#;
    let id = send_raw(&app, &format!(r#"{{"type":"order.paid","data":{data}}}"#)).await;
    let request = next_request(&receiver, "the event").await;

    assert_eq!(request.method, "POST");
    assert_eq!(
        std::str::from_utf8(&request.body).expect("UTF-8"),
        data,
        "body must be exactly the data bytes"
    );
    assert_eq!(request.header("webhook-id"), Some(id.as_str()));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("hs-event-type"), Some("order.paid"));
    assert_signed_by(&request, &secret);
    verify_with_python(&secret, &request.header_pairs(), &request.body)
        .await
        .expect("reference library verifies a data-only body");

    // A scalar `data` is sent as is too.
    send(&app, json!({"type": "order.count", "data": 7})).await;
    let request = next_request(&receiver, "scalar data").await;
    assert_eq!(&request.body[..], b"7");
    assert_signed_by(&request, &secret);
}

#[tokio::test]
async fn put_destination_receives_a_signed_put_with_the_envelope() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (_, secret) = create(
        &app,
        json!({"url": receiver.url("/put-here"), "event_types": ["doc.updated"], "method": "PUT"}),
    )
    .await;

    let id = send(&app, json!({"type": "doc.updated", "data": {"doc": "d1"}})).await;
    let request = next_request(&receiver, "the event").await;

    assert_eq!(request.method, "PUT");
    assert_eq!(request.uri, "/put-here");
    let envelope = request.json();
    assert_eq!(envelope["id"], id.as_str());
    assert_eq!(envelope["type"], "doc.updated");
    assert_eq!(envelope["data"], json!({"doc": "d1"}));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_signed_by(&request, &secret);
}

#[tokio::test]
async fn get_destination_fills_the_url_template_encoded_and_sends_no_body() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let template = receiver
        .url("/cb/{kind}?user={user_id}&amount={amount}&city={address.city}&none={missing}");
    let (_, secret) = create(
        &app,
        json!({"url": template, "event_types": ["payment.*"], "method": "GET"}),
    )
    .await;

    let id = send(
        &app,
        json!({"type": "payment.done", "data": {
            "kind": "a/b",
            "user_id": "u 1&x=2?#",
            "amount": 12.5,
            "address": {"city": "São Paulo"}
        }}),
    )
    .await;
    let request = next_request(&receiver, "the event").await;

    assert_eq!(request.method, "GET");
    assert_eq!(
        request.uri,
        "/cb/a%2Fb?user=u%201%26x%3D2%3F%23&amount=12.5&city=S%C3%A3o%20Paulo&none="
    );
    assert!(
        request.body.is_empty(),
        "GET must have no body: {:?}",
        request.body
    );
    assert_eq!(request.header("webhook-id"), Some(id.as_str()));
    assert_eq!(request.header("hs-event-type"), Some("payment.done"));
    // Signed over the empty body.
    assert_signed_by(&request, &secret);
    verify_with_python(&secret, &request.header_pairs(), b"")
        .await
        .unwrap_or_else(|why| panic!("reference library rejects a GET delivery: {why}"));
}

#[tokio::test]
async fn fan_out_gives_each_destination_exactly_its_matching_events() {
    let app = spawn_app().await;
    let (star, exact, all, other_tenant) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let (_, star_secret) = create(
        &app,
        json!({"url": star.url("/"), "event_types": ["order.*"]}),
    )
    .await;
    let (_, exact_secret) = create(
        &app,
        json!({"url": exact.url("/"), "event_types": ["order.created"]}),
    )
    .await;
    let (_, all_secret) = create(&app, json!({"url": all.url("/"), "event_types": [">"]})).await;
    create(
        &app,
        json!({"url": other_tenant.url("/"), "event_types": [">"], "tenant": "acme"}),
    )
    .await;

    let mut ids = std::collections::BTreeMap::new();
    for event_type in [
        "order.created",
        "order.updated",
        "order.item.added",
        "invoice.paid",
        "order",
    ] {
        let id = send(&app, json!({"type": event_type, "data": {"t": event_type}})).await;
        ids.insert(event_type, id);
    }
    // A tenant with no destination: nobody gets it, `>` of tenant default included.
    send(
        &app,
        json!({"type": "order.created", "tenant": "beta", "data": {}}),
    )
    .await;

    let expected = |types: &[&str]| -> BTreeSet<(String, String)> {
        types
            .iter()
            .map(|t| (t.to_string(), ids[t].clone()))
            .collect()
    };
    for (receiver, secret, want) in [
        (
            &star,
            &star_secret,
            expected(&["order.created", "order.updated"]),
        ),
        (&exact, &exact_secret, expected(&["order.created"])),
        (
            &all,
            &all_secret,
            expected(&[
                "order.created",
                "order.updated",
                "order.item.added",
                "invoice.paid",
                "order",
            ]),
        ),
    ] {
        let got = receiver.collect(want.len(), DELIVERY_TIMEOUT).await;
        for request in &got {
            assert_signed_by(request, secret);
        }
        let got: BTreeSet<(String, String)> = got
            .iter()
            .map(|r| {
                let envelope = r.json();
                assert_eq!(r.header("hs-event-type"), envelope["type"].as_str());
                (
                    envelope["type"].as_str().unwrap().to_string(),
                    r.header("webhook-id").unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(got, want);
    }
    // Listened to side by side: the quiet periods overlap.
    let names = ["order.*", "order.created", ">", "tenant acme"];
    let late = futures::future::join_all(
        [&star, &exact, &all, &other_tenant].map(|r| r.recv_timeout(QUIET)),
    )
    .await;
    for (request, name) in late.into_iter().zip(names) {
        assert_quiet(request, name);
    }

    // The other tenant's destination does work: it gets its own tenant's event, alone.
    let acme = send(
        &app,
        json!({"type": "order.created", "tenant": "acme", "data": {}}),
    )
    .await;
    let request = next_request(&other_tenant, "tenant acme's event").await;
    assert_eq!(request.header("webhook-id"), Some(acme.as_str()));
    assert_eq!(request.json()["tenant"], "acme");
    let late = futures::future::join_all(
        [&star, &exact, &all].map(|r| r.recv_timeout(Duration::from_millis(300))),
    )
    .await;
    for request in late {
        assert_quiet(request, "tenant default's destinations, acme's event");
    }
}

#[tokio::test]
async fn event_published_with_another_nats_client_is_delivered_and_tracked() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (destination, secret) = create(
        &app,
        json!({"url": receiver.url("/nats"), "event_types": ["sensor.>"]}),
    )
    .await;

    let id = "evt_from_nats_py_1";
    let envelope = format!(
        r#"{{"id":"{id}","tenant":"default","type":"sensor.temp.read","source":"py","occurred_at":null,"received_at":"2025-01-02T03:04:05Z","data":{{"c": 21.5}}}}"#
    );
    let ack = publish_with_python_nats(
        &app.nats.url(),
        "hs.ev.default.sensor.temp.read",
        &[
            ("Nats-Msg-Id", id),
            ("Hs-Event-Type", "sensor.temp.read"),
            ("Hs-Tenant", "default"),
        ],
        envelope.as_bytes(),
    )
    .await
    .expect("nats-py publish acknowledged");
    assert_eq!(ack["stream"], "HS_EVENTS");

    let request = next_request(&receiver, "the NATS-published event").await;
    assert_eq!(
        &request.body[..],
        envelope.as_bytes(),
        "body not byte-exact"
    );
    assert_eq!(request.header("webhook-id"), Some(id));
    assert_eq!(request.header("hs-event-type"), Some("sensor.temp.read"));
    assert_signed_by(&request, &secret);
    verify_with_python(&secret, &request.header_pairs(), &request.body)
        .await
        .expect("reference library verifies");

    // The API finds it through its attempts, although it never went through ingest.
    let view = eventually(DELIVERY_TIMEOUT, async || {
        let (status, view) = app.get(&format!("/v1/events/{id}")).await;
        if status == StatusCode::OK && view["deliveries"][0]["status"] == "delivered" {
            Ok(view)
        } else {
            Err(format!(
                "event view never showed delivered: {status} {view}"
            ))
        }
    })
    .await;
    assert_eq!(
        view["deliveries"][0]["destination_id"],
        destination.as_str()
    );
    assert_eq!(view["event"]["data"], json!({"c": 21.5}));
    assert_eq!(view["stream_seq"], ack["seq"]);
    assert_quiet(receiver.recv_timeout(QUIET).await, "after the one event");
}

#[tokio::test]
async fn destination_headers_are_sent_with_every_request() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (status, view) = app
        .create_destination(json!({
            "url": receiver.url("/h"),
            "event_types": ["a.*"],
            "headers": {"Authorization": "Bearer s3cr3t", "X-Team": "payments"},
            "retry": {"schedule_ms": [50], "max_attempts": 2},
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    assert_eq!(
        view["headers"],
        json!({"Authorization": "Bearer s3cr3t", "X-Team": "payments"})
    );

    // On the first attempt and on the retry alike.
    receiver.script([500]);
    send(&app, json!({"type": "a.b", "data": 1})).await;
    let requests = receiver.collect(2, DELIVERY_TIMEOUT).await;
    assert_eq!(requests.len(), 2, "first attempt and one retry");
    for (request, attempt) in requests.iter().zip(["1", "2"]) {
        assert_eq!(request.header("hs-attempt"), Some(attempt));
        assert_eq!(request.header("authorization"), Some("Bearer s3cr3t"));
        assert_eq!(request.header("x-team"), Some("payments"));
        assert_eq!(request.header("hs-event-type"), Some("a.b"));
    }
}

#[tokio::test]
async fn directed_event_reaches_only_its_destination() {
    let app = spawn_app().await;
    let (first, second) = (Receiver::start().await, Receiver::start().await);
    let (first_id, _) = create(
        &app,
        json!({"url": first.url("/"), "event_types": ["order.*"]}),
    )
    .await;
    create(
        &app,
        json!({"url": second.url("/"), "event_types": ["order.*"]}),
    )
    .await;

    let directed = send(
        &app,
        json!({"type": "order.created", "data": {"only": "first"}, "destination_id": first_id}),
    )
    .await;
    let request = next_request(&first, "the directed event").await;
    assert_eq!(request.header("webhook-id"), Some(directed.as_str()));
    assert_eq!(request.json()["data"], json!({"only": "first"}));
    assert_quiet(second.recv_timeout(QUIET).await, "the other destination");

    // Both still get an undirected event: the silence above was the routing.
    let both = send(&app, json!({"type": "order.created", "data": {}})).await;
    for receiver in [&first, &second] {
        let request = next_request(receiver, "the undirected event").await;
        assert_eq!(request.header("webhook-id"), Some(both.as_str()));
    }
    assert_quiet(first.recv_timeout(QUIET).await, "first, at the end");
    assert_quiet(second.recv_timeout(QUIET).await, "second, at the end");
}

#[tokio::test]
async fn test_route_sends_a_test_event_to_that_destination_only() {
    let app = spawn_app().await;
    let (target, bystander) = (Receiver::start().await, Receiver::start().await);
    let (target_id, secret) =
        create(&app, json!({"url": target.url("/t"), "event_types": [">"]})).await;
    create(
        &app,
        json!({"url": bystander.url("/b"), "event_types": [">"]}),
    )
    .await;

    let (status, answer) = app
        .post(&format!("/v1/destinations/{target_id}/test"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["id"].as_str().expect("event id").to_string();

    let request = next_request(&target, "the test event").await;
    assert_eq!(request.header("webhook-id"), Some(id.as_str()));
    assert_eq!(request.header("hs-event-type"), Some("hookstream.test"));
    let envelope = request.json();
    assert_eq!(envelope["type"], "hookstream.test");
    assert_eq!(envelope["data"]["destination_id"], target_id.as_str());
    assert_signed_by(&request, &secret);
    assert_quiet(bystander.recv_timeout(QUIET).await, "the other destination");
    assert_quiet(
        target.recv_timeout(Duration::from_millis(100)).await,
        "a second test event",
    );

    let (status, _) = app.post("/v1/destinations/dst_nope/test", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn producer_trace_context_reaches_the_receiver() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    create(
        &app,
        json!({"url": receiver.url("/"), "event_types": [">"]}),
    )
    .await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (status, body) = app
        .post_event_with_headers(
            json!({"type": "traced.event", "data": {}}),
            &[("traceparent", &format!("00-{trace_id}-00f067aa0ba902b7-01"))],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let request = next_request(&receiver, "the traced event").await;
    let traceparent = request
        .header("traceparent")
        .expect("the contract lists traceparent among the headers sent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "W3C traceparent: {traceparent}");
    assert_eq!(
        parts[1], trace_id,
        "the producer's trace continues to the receiver"
    );
}

#[tokio::test]
async fn overlapping_patterns_deliver_each_matching_event_once_and_nothing_else() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    // `order.*` and `*.created` overlap (the consumer filter is widened to `*.*`), and
    // `order.created` is covered by both.
    let (_, secret) = create(
        &app,
        json!({"url": receiver.url("/"), "event_types": ["order.*", "*.created", "order.created"]}),
    )
    .await;

    let mut want = BTreeSet::new();
    for (event_type, wanted) in [
        ("order.created", true),
        ("user.created", true),
        ("order.updated", true),
        // Caught by the widened filter, wanted by no pattern.
        ("user.deleted", false),
        ("order.created.v2", false),
        ("order", false),
    ] {
        let id = send(&app, json!({"type": event_type, "data": {}})).await;
        if wanted {
            want.insert((event_type.to_string(), id));
        }
    }
    let got: BTreeSet<(String, String)> = receiver
        .collect(want.len(), DELIVERY_TIMEOUT)
        .await
        .iter()
        .map(|r| {
            assert_signed_by(r, &secret);
            (
                r.header("hs-event-type").unwrap().to_string(),
                r.header("webhook-id").unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_quiet(
        receiver.recv_timeout(QUIET).await,
        "after the matching events",
    );
}

#[tokio::test]
async fn max_in_flight_bounds_concurrent_requests_to_a_destination() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(300));
    create(
        &app,
        json!({"url": receiver.url("/"), "event_types": [">"], "max_in_flight": 2}),
    )
    .await;
    let batch: Vec<Value> = (0..8)
        .map(|n| json!({"type": "load", "data": {"n": n}}))
        .collect();
    let (status, answer) = app.post_batch(json!({ "events": batch })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let requests = receiver.collect(8, DELIVERY_TIMEOUT).await;
    assert_eq!(requests.len(), 8);
    assert_eq!(
        receiver.max_concurrent(),
        2,
        "at most max_in_flight at once, and the destination does use both slots"
    );
}

#[tokio::test]
async fn a_slow_destination_does_not_delay_the_others() {
    let app = spawn_app().await;
    let (slow, fast) = (Receiver::start().await, Receiver::start().await);
    slow.set_delay(Duration::from_secs(4));
    create(
        &app,
        json!({"url": slow.url("/"), "event_types": [">"], "max_in_flight": 1, "timeout_ms": 10000}),
    )
    .await;
    create(&app, json!({"url": fast.url("/"), "event_types": [">"]})).await;

    let started = std::time::Instant::now();
    for n in 0..5 {
        send(&app, json!({"type": "tick", "data": {"n": n}})).await;
    }
    let got = fast.collect(5, Duration::from_secs(3)).await;
    assert_eq!(
        got.len(),
        5,
        "the fast destination got {} of 5 while the slow one was busy",
        got.len()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "fast deliveries waited for the slow destination: {:?}",
        started.elapsed()
    );
    // Its first request may reach the receiver a moment after the fast ones (both are
    // woken by the same events); it must then still be the only one, open for 4 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while slow.open_requests() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        slow.open_requests(),
        1,
        "the slow one is still on its first event"
    );
}

#[tokio::test]
async fn a_large_event_is_delivered_intact() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (_, secret) = create(
        &app,
        json!({"url": receiver.url("/"), "event_types": [">"]}),
    )
    .await;

    // About 700 KB of data: under the 1 MiB API and NATS limits.
    let blob: String = (0..700_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let id = send(&app, json!({"type": "big", "data": {"blob": blob}})).await;
    let request = next_request(&receiver, "the large event").await;
    assert_eq!(request.header("webhook-id"), Some(id.as_str()));
    assert_eq!(request.json()["data"]["blob"].as_str(), Some(blob.as_str()));
    assert_signed_by(&request, &secret);
}
