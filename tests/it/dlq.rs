//! Dead letters: what cannot be delivered lands on `HS_DLQ`, read here with a plain NATS
//! client, with every documented header and the original body; the original is acked; a
//! `410 Gone` disables the destination; a message that is not an event is dead-lettered
//! for each destination that would have received it, and never sent.

use std::time::Duration;

use async_nats::jetstream::{self, message::StreamMessage};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::steps::{assert_quiet, create, eventually, send};
use crate::common::{Receiver, TestApp, spawn_app};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(600);

fn header<'a>(message: &'a StreamMessage, name: &str) -> Option<&'a str> {
    message.headers.get(name).map(|v| v.as_str())
}

/// Waits for the dead letter of `destination` (the last one on its subject).
async fn dead_letter(app: &TestApp, tenant: &str, destination: &str) -> StreamMessage {
    let js = jetstream::new(app.nats.client().await);
    let stream = js.get_stream("HS_DLQ").await.expect("HS_DLQ exists");
    let subject = format!("hs.dlq.{tenant}.{destination}");
    eventually(DELIVERY_TIMEOUT, async || {
        stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .map_err(|e| format!("no dead letter on {subject}: {e}"))
    })
    .await
}

/// How many dead letters `HS_DLQ` holds on `subject`.
async fn dead_letter_count(app: &TestApp, subject: &str) -> u64 {
    let js = jetstream::new(app.nats.client().await);
    let stream = js.get_stream("HS_DLQ").await.expect("HS_DLQ exists");
    let js_info = stream.get_info().await.expect("HS_DLQ info");
    if js_info.state.messages == 0 {
        return 0;
    }
    let mut count = 0;
    let mut seq = js_info.state.first_sequence;
    while seq <= js_info.state.last_sequence {
        if let Ok(m) = stream.get_raw_message(seq).await
            && m.subject.as_str() == subject
        {
            count += 1;
        }
        seq += 1;
    }
    count
}

/// Polls the destination's shard until no delivery for it is stored (each one was
/// delivered or dead-lettered, and acked).
async fn assert_consumer_drained(app: &TestApp, destination: &str) {
    eventually(
        Duration::from_secs(5),
        async || match crate::common::steps::deliveries_waiting(app, destination).await {
            0 => Ok(()),
            waiting => Err(format!(
                "{destination} still has {waiting} deliveries stored"
            )),
        },
    )
    .await
}

/// Polls `GET /v1/events/{id}` until the destination's delivery status is `status`.
async fn wait_status(app: &TestApp, event: &str, destination: &str, status: &str) -> Value {
    eventually(DELIVERY_TIMEOUT, async || {
        let (code, view) = app.get(&format!("/v1/events/{event}")).await;
        view["deliveries"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["destination_id"] == destination && d["status"] == status)
            .cloned()
            .ok_or_else(|| {
                format!("event {event} never reached {status} for {destination}: {code} {view}")
            })
    })
    .await
}

fn timestamp(message: &StreamMessage, name: &str) -> DateTime<Utc> {
    header(message, name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap_or_else(|e| panic!("{name} is not RFC 3339: {e}"))
}

#[tokio::test]
async fn event_is_dead_lettered_after_max_attempts_with_every_documented_header() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.set_status(500);
    let destination = create(
        &app,
        json!({
            "url": receiver.url("/fails"),
            "event_types": ["order.*"],
            "retry": {"schedule_ms": [150, 150], "max_attempts": 3},
        }),
    )
    .await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (status, answer) = app
        .post_event_with_headers(
            json!({"type": "order.created", "data": {"order": 7}}),
            &[("traceparent", traceparent)],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["id"].as_str().unwrap().to_string();

    let requests = receiver.collect(3, DELIVERY_TIMEOUT).await;
    assert_eq!(requests.len(), 3, "max_attempts requests");
    assert_quiet(receiver.recv_timeout(QUIET).await, "after max_attempts");

    let letter = dead_letter(&app, "default", &destination).await;
    let (_, view) = app.get(&format!("/v1/events/{id}")).await;
    let seq = view["stream_seq"].as_u64().expect("stream_seq");

    // The original message, unchanged.
    let js = jetstream::new(app.nats.client().await);
    let original = js
        .get_stream("HS_EVENTS")
        .await
        .unwrap()
        .get_raw_message(seq)
        .await
        .expect("the original on HS_EVENTS");
    assert_eq!(
        letter.payload, original.payload,
        "body = the original event body"
    );
    assert_eq!(letter.payload, requests[0].body, "… which is what was sent");

    assert_eq!(header(&letter, "Hs-Dlq-Reason"), Some("max_attempts"));
    assert_eq!(header(&letter, "Hs-Attempts"), Some("3"));
    assert_eq!(header(&letter, "Hs-Last-Status"), Some("500"));
    assert!(
        letter.headers.get("Hs-Last-Error").is_some(),
        "Hs-Last-Error is documented even when the failure was a status"
    );
    assert_eq!(
        header(&letter, "Hs-Destination-Id"),
        Some(destination.as_str())
    );
    assert_eq!(
        header(&letter, "Hs-Original-Seq"),
        Some(seq.to_string().as_str())
    );
    let first = timestamp(&letter, "Hs-First-Attempt-At");
    let last = timestamp(&letter, "Hs-Last-Attempt-At");
    let spread = (last - first).num_milliseconds();
    assert!(
        (300..5000).contains(&spread),
        "first and last attempt are two 150 ms retries apart, not {spread} ms"
    );
    // The original headers come along.
    assert_eq!(header(&letter, "Hs-Event-Type"), Some("order.created"));
    assert_eq!(header(&letter, "Hs-Tenant"), Some("default"));
    assert_eq!(header(&letter, "traceparent"), Some(traceparent));
    assert_eq!(
        dead_letter_count(&app, &format!("hs.dlq.default.{destination}")).await,
        1,
        "exactly one dead letter"
    );

    let delivery = wait_status(&app, &id, &destination, "dead_lettered").await;
    assert_eq!(delivery["attempts"], 3);
    assert_consumer_drained(&app, &destination).await;

    // Counters: three failed attempts, one dead letter, nothing delivered.
    let row = eventually(Duration::from_secs(5), async || {
        let (_, stats) = app.get("/v1/stats").await;
        let row = stats["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["destination_id"] == destination.as_str())
            .cloned()
            .unwrap_or(Value::Null);
        if row["dead_lettered"] == 1 && row["failed_attempts"] == 3 {
            Ok(row)
        } else {
            Err(format!(
                "stats never showed 3 failed and 1 dead-lettered: {row}"
            ))
        }
    })
    .await;
    assert_eq!(row["delivered"], 0, "{row}");
    assert_eq!(row["backlog"], 0, "{row}");
}

#[tokio::test]
async fn gone_dead_letters_at_once_and_disables_the_destination_visibly() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script([410]);
    let destination = create(
        &app,
        json!({
            "url": receiver.url("/gone"),
            "event_types": [">"],
            "retry": {"schedule_ms": [50], "max_attempts": 5},
        }),
    )
    .await;
    let id = send(&app, json!({"type": "a.b", "data": {}})).await;

    receiver
        .recv_timeout(DELIVERY_TIMEOUT)
        .await
        .expect("the one attempt");
    let letter = dead_letter(&app, "default", &destination).await;
    assert_eq!(header(&letter, "Hs-Dlq-Reason"), Some("gone"));
    assert_eq!(header(&letter, "Hs-Attempts"), Some("1"));
    assert_eq!(header(&letter, "Hs-Last-Status"), Some("410"));
    wait_status(&app, &id, &destination, "dead_lettered").await;

    let view = eventually(Duration::from_secs(5), async || {
        let (status, view) = app.get(&format!("/v1/destinations/{destination}")).await;
        assert_eq!(status, StatusCode::OK);
        if view["enabled"] == false {
            Ok(view)
        } else {
            Err(format!("destination still enabled after 410: {view}"))
        }
    })
    .await;
    let reason = view["disabled_reason"].as_str().expect("disabled_reason");
    assert!(
        reason.contains("410"),
        "disabled_reason should name the 410: {reason}"
    );

    // A later event is accepted and not sent.
    let later = send(&app, json!({"type": "a.c", "data": {}})).await;
    assert_quiet(
        receiver.recv_timeout(QUIET).await,
        "disabled destination, later event",
    );
    assert_eq!(
        dead_letter_count(&app, &format!("hs.dlq.default.{destination}")).await,
        1,
        "the later event is not dead-lettered either"
    );

    // It waited: enabling the destination again sends it.
    let (status, view) = app
        .patch(
            &format!("/v1/destinations/{destination}"),
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert!(
        view.get("disabled_reason").is_none_or(Value::is_null),
        "{view}"
    );
    let request = receiver
        .recv_timeout(DELIVERY_TIMEOUT)
        .await
        .expect("the event that waited");
    assert_eq!(request.header("webhook-id"), Some(later.as_str()));
    assert_quiet(receiver.recv_timeout(QUIET).await, "after re-enabling");
}

#[tokio::test]
async fn malformed_message_is_dead_lettered_for_each_matching_destination_and_never_sent() {
    let app = spawn_app().await;
    let (orders, everything, invoices) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let orders_id = create(
        &app,
        json!({"url": orders.url("/"), "event_types": ["order.*"]}),
    )
    .await;
    let everything_id = create(
        &app,
        json!({"url": everything.url("/"), "event_types": [">"]}),
    )
    .await;
    let invoices_id = create(
        &app,
        json!({"url": invoices.url("/"), "event_types": ["invoice.*"]}),
    )
    .await;

    let js = jetstream::new(app.nats.client().await);
    let garbage: &[u8] = b"this is {not an event";
    js.publish("hs.ev.default.order.created", garbage.into())
        .await
        .expect("publish")
        .await
        .expect("PubAck");

    for destination in [&orders_id, &everything_id] {
        let letter = dead_letter(&app, "default", destination).await;
        assert_eq!(header(&letter, "Hs-Dlq-Reason"), Some("malformed_event"));
        assert_eq!(&letter.payload[..], garbage, "body = the original bytes");
        assert_eq!(
            header(&letter, "Hs-Destination-Id"),
            Some(destination.as_str())
        );
        assert_eq!(header(&letter, "Hs-Attempts"), Some("0"));
        let error = header(&letter, "Hs-Last-Error").unwrap_or_default();
        assert!(!error.is_empty(), "Hs-Last-Error should say what was wrong");
        assert_consumer_drained(&app, destination).await;
    }

    // JSON, but not an envelope (no received_at, no id).
    let half: &[u8] = br#"{"tenant":"default","type":"order.created","data":{}}"#;
    js.publish("hs.ev.default.order.created", half.into())
        .await
        .expect("publish")
        .await
        .expect("PubAck");
    eventually(DELIVERY_TIMEOUT, async || {
        match dead_letter_count(&app, &format!("hs.dlq.default.{orders_id}")).await {
            n if n >= 2 => Ok(()),
            n => Err(format!(
                "the half envelope was not dead-lettered ({n} dead letters)"
            )),
        }
    })
    .await;
    let letter = dead_letter(&app, "default", &orders_id).await;
    assert_eq!(&letter.payload[..], half);
    assert_eq!(header(&letter, "Hs-Dlq-Reason"), Some("malformed_event"));

    for receiver in [&orders, &everything, &invoices] {
        assert_quiet(
            receiver.recv_timeout(Duration::from_millis(200)).await,
            "malformed event",
        );
    }
    assert_eq!(
        dead_letter_count(&app, &format!("hs.dlq.default.{invoices_id}")).await,
        0,
        "a destination that does not want order.* gets no dead letter"
    );

    // The workers carry on: a valid event still goes through.
    let id = send(&app, json!({"type": "order.paid", "data": {}})).await;
    for receiver in [&orders, &everything] {
        let request = receiver
            .recv_timeout(DELIVERY_TIMEOUT)
            .await
            .expect("a valid event after the malformed ones");
        assert_eq!(request.header("webhook-id"), Some(id.as_str()));
    }
}

#[tokio::test]
async fn unreachable_destination_is_dead_lettered_with_the_connection_error() {
    let app = spawn_app().await;
    // A port nobody listens on.
    let port = crate::common::free_port();
    let destination = create(
        &app,
        json!({
            "url": format!("http://127.0.0.1:{port}/nobody"),
            "event_types": [">"],
            "retry": {"schedule_ms": [50], "max_attempts": 2},
        }),
    )
    .await;
    let id = send(&app, json!({"type": "x", "data": {}})).await;

    let letter = dead_letter(&app, "default", &destination).await;
    assert_eq!(header(&letter, "Hs-Dlq-Reason"), Some("max_attempts"));
    assert_eq!(header(&letter, "Hs-Attempts"), Some("2"));
    assert_eq!(header(&letter, "Hs-Last-Status").unwrap_or(""), "");
    let error = header(&letter, "Hs-Last-Error").unwrap_or_default();
    assert!(error.contains("connect"), "Hs-Last-Error: {error:?}");

    let delivery = wait_status(&app, &id, &destination, "dead_lettered").await;
    assert_eq!(delivery["attempts"], 2);
    let last = &delivery["last_attempt"];
    assert!(last.get("status").is_none_or(Value::is_null), "{last}");
    assert!(
        last["error"]
            .as_str()
            .unwrap_or_default()
            .contains("connect"),
        "{last}"
    );
    assert_consumer_drained(&app, &destination).await;
}
