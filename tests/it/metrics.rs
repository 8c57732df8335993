//! `/metrics`: valid Prometheus text, and counters that move by exactly what happened.
//! Each test runs in its own process (nextest), but values are compared before and after
//! anyway, so the assertions hold whatever ran before in the process.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::prometheus::Scrape;
use crate::common::{Receiver, TestApp, spawn_app, spawn_app_with};

const WAIT: Duration = Duration::from_secs(20);

const INGESTED: &str = "hookstream_events_ingested_total";
const DELIVERIES: &str = "hookstream_deliveries_total";
const RETRIES: &str = "hookstream_retries_scheduled_total";
const ATTEMPTS_COUNT: &str = "hookstream_attempt_duration_seconds_count";
const DUPLICATES: &str = "hookstream_ingest_duplicates_total";
const HTTP: &str = "hookstream_http_requests_total";
const BACKLOG: &str = "hookstream_consumer_backlog";
const RECORDS: &str = "hookstream_idempotency_records";

/// `/metrics`, every line checked against the text format.
async fn scrape(app: &TestApp) -> Scrape {
    let response = app
        .client
        .get(format!("{}/metrics", app.base_url()))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ASCII content type")
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.expect("metrics text");
    Scrape::parse(&text).unwrap_or_else(|why| panic!("/metrics is not Prometheus text: {why}"))
}

fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape.value(metric, labels)
}

/// Polls until `done` holds for a scrape; panics with the last one after `WAIT`.
async fn scrape_until(app: &TestApp, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let scrape = scrape(app).await;
        if done(&scrape) {
            return scrape;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "metrics did not reach the expected values: {:#?}",
                scrape.samples
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn destination(app: &TestApp, receiver: &Receiver) -> String {
    let (status, body) = app
        .create_destination(json!({
            "url": receiver.url("/"),
            "event_types": ["order.*"],
            "retry": {"schedule_ms": [100], "max_attempts": 3},
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().expect("destination id").to_string()
}

#[tokio::test]
async fn counters_move_by_exactly_what_happened() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script([500]);
    let dst = destination(&app, &receiver).await;
    let before = scrape(&app).await;

    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, body) = app
            .post_event_with_headers(
                json!({"type": "order.created", "data": {"n": n}}),
                &[("idempotency-key", &format!("metrics-{n}"))],
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    // A retried request: a duplicate, not a new event.
    let (status, _) = app
        .post_event_with_headers(
            json!({"type": "order.created", "data": {"n": 0}}),
            &[("idempotency-key", "metrics-0")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.get(&format!("/v1/events/{}", ids[0])).await;
    assert_eq!(status, StatusCode::OK);

    assert_eq!(
        receiver.collect(4, WAIT).await.len(),
        4,
        "3 events, one retried"
    );
    let delta = |after: &Scrape, metric: &str, labels: &[(&str, &str)]| {
        value(after, metric, labels) - value(&before, metric, labels)
    };
    let delivered = [("outcome", "delivered"), ("destination", dst.as_str())];
    scrape_until(&app, |s| delta(s, DELIVERIES, &delivered) >= 3.0).await;
    // Let anything late land, then check exact amounts on a fresh scrape.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = scrape(&app).await;

    assert_eq!(delta(&after, INGESTED, &[("via", "http")]), 3.0);
    assert_eq!(delta(&after, DUPLICATES, &[]), 1.0);
    assert_eq!(delta(&after, DELIVERIES, &delivered), 3.0);
    assert_eq!(
        delta(
            &after,
            DELIVERIES,
            &[("outcome", "failed"), ("destination", &dst)]
        ),
        1.0
    );
    assert_eq!(delta(&after, RETRIES, &[("destination", &dst)]), 1.0);
    assert_eq!(delta(&after, ATTEMPTS_COUNT, &[]), 4.0);
    assert_eq!(
        delta(&after, "hookstream_dead_lettered_total", &[]),
        0.0,
        "nothing dead-lettered"
    );
    // Requests by route template, never by raw path.
    assert_eq!(
        delta(
            &after,
            HTTP,
            &[
                ("route", "/v1/events"),
                ("method", "POST"),
                ("status", "202")
            ]
        ),
        3.0
    );
    assert_eq!(
        delta(&after, HTTP, &[("route", "/v1/events"), ("status", "200")]),
        1.0
    );
    assert_eq!(
        delta(
            &after,
            HTTP,
            &[("route", "/v1/events/{id}"), ("status", "200")]
        ),
        1.0
    );
    assert!(
        !after
            .matching(HTTP, &[])
            .any(|s| s.labels.get("route").is_some_and(|r| r.contains("evt_"))),
        "a raw path became a label"
    );

    // The backlog comes from the sweep's consumer listing (every 500 ms in tests).
    let swept = scrape_until(&app, |s| {
        s.matching(BACKLOG, &[("destination", &dst)]).count() == 1
    })
    .await;
    assert_eq!(swept.types.get(BACKLOG).map(String::as_str), Some("gauge"));
    assert_eq!(
        swept.types.get(DELIVERIES).map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        swept
            .types
            .get("hookstream_attempt_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    assert_eq!(value(&swept, BACKLOG, &[("destination", &dst)]), 0.0);
    // The lookup records nats-server holds: one per accepted event, none for the retry
    // (this test's nats-server is its own). Read by the same sweep.
    let swept = scrape_until(&app, |s| value(s, RECORDS, &[]) == 3.0).await;
    assert_eq!(swept.types.get(RECORDS).map(String::as_str), Some("gauge"));
}

#[tokio::test]
async fn destinations_beyond_the_label_limit_share_one_series() {
    let app = spawn_app_with(|cfg| cfg.telemetry.per_destination_metrics_limit = 1).await;
    let receiver = Receiver::start().await;
    let first = destination(&app, &receiver).await;
    let second = destination(&app, &receiver).await;

    let (status, _) = app
        .post_event(json!({"type": "order.created", "data": {}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(receiver.collect(2, WAIT).await.len(), 2);
    let after = scrape_until(&app, |s| {
        value(s, DELIVERIES, &[("outcome", "delivered")]) >= 2.0
    })
    .await;
    let labelled: Vec<&str> = after
        .matching(DELIVERIES, &[])
        .filter_map(|s| s.labels.get("destination").map(String::as_str))
        .collect();
    // Which destination delivered first decides which one keeps its own label.
    assert_eq!(labelled.len(), 2, "{labelled:?}");
    assert!(labelled.contains(&"_other"), "{labelled:?}");
    assert!(
        labelled.contains(&first.as_str()) ^ labelled.contains(&second.as_str()),
        "{labelled:?}"
    );
}
