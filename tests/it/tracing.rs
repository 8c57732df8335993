//! One OpenTelemetry trace per event: the real binary exports by OTLP (configured by the
//! standard `OTEL_*` variables) to a real receiver running in the test, and the webhook
//! receiver sees the attempt span's `traceparent`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::otlp::{OtlpReceiver, ReceivedSpan, kind, status};
use crate::common::{NatsServer, Receiver, ServiceProcess, spawn_app};

const WAIT: Duration = Duration::from_secs(20);
/// A producer's own trace context, as a client library would send it.
const PRODUCER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";

fn producer_traceparent() -> String {
    format!("00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01")
}

/// The service with traces on, exporting to `otlp` over `protocol`, spans sent every
/// `batch_delay_ms`.
async fn traced_service(
    nats: &NatsServer,
    otlp: &OtlpReceiver,
    protocol: &str,
    batch_delay_ms: &str,
) -> ServiceProcess {
    ServiceProcess::spawn(
        &nats.url(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_SERVICE_NAME", "hookstream-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", batch_delay_ms),
        ],
    )
    .await
}

async fn post(base_url: &str, path: &str, body: Value, headers: &[(&str, &str)]) -> Value {
    let client = reqwest::Client::new();
    let request = headers.iter().fold(
        client.post(format!("{base_url}{path}")).json(&body),
        |r, (name, value)| r.header(*name, *value),
    );
    let response = request.send().await.expect("request to the service");
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON answer");
    assert!(
        status == StatusCode::CREATED || status == StatusCode::ACCEPTED,
        "POST {path}: {status} {body}"
    );
    body
}

async fn create_destination(base_url: &str, receiver: &Receiver) -> String {
    crate::common::steps::create_at(
        base_url,
        json!({
            "url": receiver.url("/hooks?token=q-secret"),
            "event_types": ["order.*"],
            "retry": {"schedule_ms": [200], "max_attempts": 3},
        }),
    )
    .await
}

/// (trace id, span id) of a `traceparent` value.
fn ids_of(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {traceparent:?}");
    (parts[1].to_string(), parts[2].to_string())
}

fn of_event<'a>(spans: &'a [ReceivedSpan], event_id: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.attr("hookstream.event.id") == Some(event_id))
        .collect()
}

fn attempts<'a>(spans: &'a [ReceivedSpan], event_id: &str) -> Vec<&'a ReceivedSpan> {
    let mut found: Vec<&ReceivedSpan> = of_event(spans, event_id)
        .into_iter()
        .filter(|s| s.kind == kind::CLIENT)
        .collect();
    found.sort_by_key(|s| s.attr("hookstream.attempt").map(str::to_string));
    found
}

fn the_one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    pred: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| pred(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {what} span, got {found:#?}\nall: {spans:#?}"
    );
    found[0]
}

#[tokio::test]
async fn event_failing_once_is_one_trace_from_request_to_receiver_over_grpc() {
    let nats = NatsServer::start().await;
    let otlp = OtlpReceiver::start_grpc().await;
    let receiver = Receiver::start().await;
    receiver.script([500]);
    let service = traced_service(&nats, &otlp, "grpc", "100").await;
    let base = service.base_url();
    let destination = create_destination(&base, &receiver).await;

    let accepted = post(
        &base,
        "/v1/events",
        json!({"type": "order.created", "data": {"order": 1}}),
        &[("traceparent", &producer_traceparent())],
    )
    .await;
    let event_id = accepted["id"].as_str().expect("event id").to_string();

    let requests = receiver.collect(2, WAIT).await;
    assert_eq!(requests.len(), 2, "a failed attempt, then a successful one");
    let spans = otlp
        .wait_for(WAIT, |spans| {
            attempts(spans, &event_id).len() == 2
                && spans
                    .iter()
                    .any(|s| s.kind == kind::SERVER && s.name == "POST /v1/events")
                && spans.iter().filter(|s| s.kind == kind::CONSUMER).count() == 2
        })
        .await;
    let trace: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == PRODUCER_TRACE)
        .collect();
    let trace: Vec<ReceivedSpan> = trace.into_iter().cloned().collect();

    // The request's span, a child of the producer's traceparent.
    let ingest = the_one(&trace, "ingest", |s| s.kind == kind::SERVER);
    assert_eq!(ingest.name, "POST /v1/events");
    assert_eq!(ingest.parent_span_id, PRODUCER_SPAN);
    assert_eq!(ingest.attr("http.route"), Some("/v1/events"));
    assert_eq!(ingest.attr("http.response.status_code"), Some("202"));
    assert_eq!(ingest.service, "hookstream-under-test");

    let publish = the_one(&trace, "publish", |s| s.kind == kind::PRODUCER);
    assert_eq!(publish.name, "publish HS_EVENTS");
    assert_eq!(publish.parent_span_id, ingest.span_id);
    assert_eq!(publish.attr("messaging.system"), Some("nats"));
    assert_eq!(
        publish.attr("messaging.message.id"),
        Some(event_id.as_str())
    );
    assert_eq!(
        publish.attr("messaging.destination.name"),
        Some("hs.ev.default.order.created")
    );

    // Two deliveries of the message (the retry is a redelivery), each under the publish.
    let processes: Vec<&ReceivedSpan> = trace.iter().filter(|s| s.kind == kind::CONSUMER).collect();
    assert_eq!(processes.len(), 2, "{processes:#?}");
    for p in &processes {
        assert_eq!(p.parent_span_id, publish.span_id);
        assert_eq!(
            p.attr("hookstream.destination.id"),
            Some(destination.as_str())
        );
        assert_eq!(p.attr("hookstream.event.id"), Some(event_id.as_str()));
    }
    let mut counts: Vec<&str> = processes
        .iter()
        .map(|p| {
            p.attr("messaging.nats.message.delivery_count")
                .unwrap_or("?")
        })
        .collect();
    counts.sort();
    assert_eq!(counts, ["1", "2"]);

    let tried = attempts(&trace, &event_id);
    assert_eq!(tried.len(), 2, "{tried:#?}");
    let (first, second) = (tried[0], tried[1]);
    for (n, attempt) in [(1, first), (2, second)] {
        assert_eq!(attempt.name, "POST");
        assert_eq!(
            attempt.attr("hookstream.attempt"),
            Some(n.to_string().as_str())
        );
        assert_eq!(
            attempt.attr("hookstream.destination.id"),
            Some(destination.as_str())
        );
        assert_eq!(attempt.attr("http.request.method"), Some("POST"));
        assert!(
            processes
                .iter()
                .any(|p| p.span_id == attempt.parent_span_id),
            "attempt {n} is a child of a process span"
        );
        // The query (here a token) never reaches the trace.
        let url = attempt.attr("url.full").expect("url.full");
        assert!(
            url.ends_with("/hooks") && !url.contains("q-secret"),
            "{url}"
        );
    }
    assert_eq!(first.status, status::ERROR);
    assert_eq!(first.attr("http.response.status_code"), Some("500"));
    assert_eq!(first.attr("error.type"), Some("500"));
    assert_eq!(second.status, status::UNSET);
    assert_eq!(second.attr("http.response.status_code"), Some("200"));
    let retried = processes
        .iter()
        .find(|p| p.span_id == first.parent_span_id)
        .expect("the first attempt's process span");
    assert_eq!(retried.attr("hookstream.outcome"), Some("retrying"));

    // The receiver saw each attempt's own span as its parent.
    for (request, attempt) in requests.iter().zip([first, second]) {
        let traceparent = request.header("traceparent").expect("traceparent sent");
        assert_eq!(
            ids_of(traceparent),
            (PRODUCER_TRACE.to_string(), attempt.span_id.clone()),
            "attempt {:?}",
            attempt.attr("hookstream.attempt")
        );
    }
}

#[tokio::test]
async fn producer_traceparent_on_a_nats_published_event_is_the_parent() {
    let nats = NatsServer::start().await;
    let otlp = OtlpReceiver::start_grpc().await;
    let receiver = Receiver::start().await;
    let service = traced_service(&nats, &otlp, "grpc", "100").await;
    create_destination(&service.base_url(), &receiver).await;

    let event_id = "evt_from_nats_producer";
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", event_id);
    headers.insert("Hs-Event-Type", "order.created");
    headers.insert("Hs-Tenant", "default");
    headers.insert("traceparent", producer_traceparent().as_str());
    let body = format!(
        r#"{{"id":"{event_id}","tenant":"default","type":"order.created","received_at":"2025-01-01T00:00:00Z","data":{{}}}}"#
    );
    let js = async_nats::jetstream::new(nats.client().await);
    js.publish_with_headers("hs.ev.default.order.created", headers, body.into())
        .await
        .expect("publish")
        .await
        .expect("PubAck");

    let request = receiver.recv_timeout(WAIT).await.expect("the webhook");
    let spans = otlp
        .wait_for(WAIT, |spans| attempts(spans, event_id).len() == 1)
        .await;
    let process = the_one(&spans, "process", |s| s.kind == kind::CONSUMER);
    assert_eq!(process.trace_id, PRODUCER_TRACE);
    assert_eq!(process.parent_span_id, PRODUCER_SPAN);
    let attempt = attempts(&spans, event_id)[0];
    assert_eq!(attempt.trace_id, PRODUCER_TRACE);
    assert_eq!(attempt.parent_span_id, process.span_id);
    assert_eq!(
        ids_of(request.header("traceparent").expect("traceparent sent")),
        (PRODUCER_TRACE.to_string(), attempt.span_id.clone())
    );
}

/// OTLP over HTTP/protobuf; and the spans still queued at SIGTERM are exported before the
/// process exits (the batch delay here is far longer than the test).
#[tokio::test]
async fn spans_go_out_over_http_protobuf_and_are_flushed_at_shutdown() {
    let nats = NatsServer::start().await;
    let otlp = OtlpReceiver::start_http().await;
    let receiver = Receiver::start().await;
    let mut service = traced_service(&nats, &otlp, "http/protobuf", "600000").await;
    let base = service.base_url();
    create_destination(&base, &receiver).await;
    let accepted = post(
        &base,
        "/v1/events",
        json!({"type": "order.paid", "data": {}}),
        &[],
    )
    .await;
    let event_id = accepted["id"].as_str().expect("event id").to_string();
    let request = receiver.recv_timeout(WAIT).await.expect("the webhook");
    // Let the attempt finish (record, ack) so its span has ended before the shutdown.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        otlp.spans().is_empty(),
        "nothing is exported before the batch delay"
    );

    service.terminate();
    let exit = service.wait_exit(Duration::from_secs(30)).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "clean exit: {exit:?}\n{}",
        service.log()
    );
    let spans = otlp.spans();
    let attempt = attempts(&spans, &event_id);
    assert_eq!(attempt.len(), 1, "flushed at shutdown: {spans:#?}");
    let ingest = the_one(&spans, "ingest", |s| s.name == "POST /v1/events");
    // No incoming traceparent: the request's span is the root of a new trace.
    assert_eq!(ingest.parent_span_id, "");
    assert_eq!(attempt[0].trace_id, ingest.trace_id);
    assert_eq!(
        ids_of(request.header("traceparent").expect("traceparent sent")),
        (ingest.trace_id.clone(), attempt[0].span_id.clone())
    );
}

/// Traces off (no `OTEL_*`): the webhook carries the producer's traceparent unchanged, as
/// before, and none when none came in.
#[tokio::test]
async fn with_traces_off_the_incoming_traceparent_is_forwarded_unchanged() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (status, _) = app
        .create_destination(json!({"url": receiver.url("/"), "event_types": [">"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let traceparent = producer_traceparent();
    let (status, _) = app
        .post_event_with_headers(
            json!({"type": "a.b", "data": {}}),
            &[("traceparent", &traceparent)],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = app.post_event(json!({"type": "a.c", "data": {}})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut requests = receiver.collect(2, WAIT).await;
    assert_eq!(requests.len(), 2);
    requests.sort_by_key(|r| r.header("hs-event-type").map(str::to_string));
    assert_eq!(
        requests[0].header("traceparent"),
        Some(traceparent.as_str())
    );
    assert_eq!(requests[1].header("traceparent"), None);
}

/// Dead-lettering and the replay of the dead letter stay in the event's trace: the
/// replay's publish is a child of the dead-letter span and links to the replay request,
/// and the delivery after it is a child of the replay.
#[tokio::test]
async fn dead_letter_and_replay_continue_the_events_trace() {
    let nats = NatsServer::start().await;
    let otlp = OtlpReceiver::start_grpc().await;
    let receiver = Receiver::start().await;
    receiver.script([500]);
    let service = traced_service(&nats, &otlp, "grpc", "100").await;
    let base = service.base_url();
    let destination = post(
        &base,
        "/v1/destinations",
        json!({"url": receiver.url("/"), "event_types": ["order.*"],
               "retry": {"schedule_ms": [], "max_attempts": 1}}),
        &[],
    )
    .await["id"]
        .as_str()
        .expect("destination id")
        .to_string();
    let accepted = post(
        &base,
        "/v1/events",
        json!({"type": "order.created", "data": {}}),
        &[("traceparent", &producer_traceparent())],
    )
    .await;
    let event_id = accepted["id"].as_str().expect("event id").to_string();
    assert!(
        receiver.recv_timeout(WAIT).await.is_some(),
        "the failed attempt"
    );
    let dead_letter = otlp
        .wait_for(WAIT, |spans| {
            spans.iter().any(|s| s.name == "publish HS_DLQ")
        })
        .await
        .into_iter()
        .find(|s| s.name == "publish HS_DLQ")
        .expect("dead-letter span");
    assert_eq!(dead_letter.trace_id, PRODUCER_TRACE);
    assert_eq!(dead_letter.kind, kind::PRODUCER);

    let response = reqwest::Client::new()
        .post(format!("{base}/v1/dlq/replay"))
        .json(&json!({"destination_id": destination}))
        .send()
        .await
        .expect("replay request");
    assert_eq!(response.status(), StatusCode::OK);
    let request = receiver
        .recv_timeout(WAIT)
        .await
        .expect("the replayed delivery");
    let spans = otlp
        .wait_for(WAIT, |spans| attempts(spans, &event_id).len() == 2)
        .await;
    let replay_request = the_one(&spans, "replay request", |s| {
        s.name == "POST /v1/dlq/replay"
    });
    let replay = the_one(&spans, "replay", |s| {
        s.attr("hookstream.operation") == Some("replay")
    });
    assert_eq!(replay.trace_id, PRODUCER_TRACE, "in the event's trace");
    assert_eq!(replay.parent_span_id, dead_letter.span_id);
    assert_eq!(
        replay.links,
        [(
            replay_request.trace_id.clone(),
            replay_request.span_id.clone()
        )]
    );
    assert_eq!(replay.attr("hookstream.event.id"), Some(event_id.as_str()));
    let after = attempts(&spans, &event_id)
        .into_iter()
        .find(|a| a.status == status::UNSET)
        .expect("the successful attempt after the replay");
    let process = the_one(&spans, "process after replay", |s| {
        s.span_id == after.parent_span_id
    });
    assert_eq!(process.parent_span_id, replay.span_id);
    assert_eq!(
        ids_of(request.header("traceparent").expect("traceparent sent")),
        (PRODUCER_TRACE.to_string(), after.span_id.clone())
    );
}
