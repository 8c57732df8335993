//! Failed attempts and when the next one comes: explicit schedules, exponential backoff,
//! `Retry-After` (honoured and capped), redirects that are failures, timeouts; and the
//! attempt records that tell the story afterwards.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::steps::{create, send};
use crate::common::{Receiver, Request, TestApp, spawn_app, spawn_app_with};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Scheduling slack allowed early (clock granularity) …
const EARLY: Duration = Duration::from_millis(50);
/// … and late: the retry is a NAK delay plus a local timer, on a loaded test machine.
const LATE: Duration = Duration::from_millis(1500);

/// Exactly `n` requests within the timeout, then none for a short while.
async fn exactly(receiver: &Receiver, n: usize, timeout: Duration) -> Vec<Request> {
    let got = receiver.collect(n, timeout).await;
    assert_eq!(
        got.len(),
        n,
        "expected {n} requests, got {}: attempts {:?}",
        got.len(),
        got.iter()
            .map(|r| r.header("hs-attempt"))
            .collect::<Vec<_>>()
    );
    if let Some(extra) = receiver.recv_timeout(Duration::from_millis(600)).await {
        panic!(
            "request beyond the expected {n}: attempt {:?}",
            extra.header("hs-attempt")
        );
    }
    got
}

/// The gap between two arrivals is at least `planned` (minus a little) and not much more.
#[track_caller]
fn assert_gap(earlier: &Request, later: &Request, planned: Duration) {
    let gap = later.received_at - earlier.received_at;
    assert!(
        gap + EARLY >= planned,
        "retry came after {gap:?}, sooner than the planned {planned:?}"
    );
    assert!(
        gap <= planned + LATE,
        "retry came after {gap:?}, far later than the planned {planned:?}"
    );
}

/// Polls `GET /v1/events/{id}/attempts` until the destination has `n` records.
async fn attempt_records(app: &TestApp, event: &str, destination: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let (status, view) = app.get(&format!("/v1/events/{event}/attempts")).await;
        if status == StatusCode::OK {
            assert_eq!(view["event_id"], event);
            let records = view["destinations"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| d["destination_id"] == destination)
                .and_then(|d| d["attempts"].as_array().cloned())
                .unwrap_or_default();
            if records.len() >= n {
                assert_eq!(
                    records.len(),
                    n,
                    "more attempt records than expected: {view}"
                );
                return records;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {n} attempt records for {event}: {status} {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn failed_attempts_are_retried_on_schedule_with_the_same_webhook_id() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script([500, 500]);
    receiver.set_body("try later");
    let destination = create(
        &app,
        json!({
            "url": receiver.url("/r"),
            "event_types": ["job.done"],
            "retry": {"schedule_ms": [300, 600], "max_attempts": 3},
        }),
    )
    .await;
    let id = send(&app, json!({"type": "job.done", "data": {"job": 1}})).await;

    let requests = exactly(&receiver, 3, DELIVERY_TIMEOUT).await;
    let attempts: Vec<_> = requests.iter().map(|r| r.header("hs-attempt")).collect();
    assert_eq!(attempts, [Some("1"), Some("2"), Some("3")]);
    for request in &requests {
        assert_eq!(request.header("webhook-id"), Some(id.as_str()));
        assert_eq!(
            request.body, requests[0].body,
            "every attempt sends the same body"
        );
    }
    assert_gap(&requests[0], &requests[1], Duration::from_millis(300));
    assert_gap(&requests[1], &requests[2], Duration::from_millis(600));

    let records = attempt_records(&app, &id, &destination, 3).await;
    let summary: Vec<(u64, u64, &str)> = records
        .iter()
        .map(|r| {
            (
                r["attempt"].as_u64().unwrap(),
                r["status"].as_u64().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, 500, "retrying"),
            (2, 500, "retrying"),
            (3, 200, "delivered")
        ]
    );
    for record in &records {
        assert_eq!(
            record["response_body"], "try later",
            "the receiver's answer is kept"
        );
    }
    for (record, planned_ms) in records[..2].iter().zip([300, 600]) {
        let started: chrono::DateTime<chrono::Utc> =
            record["started_at"].as_str().unwrap().parse().unwrap();
        let next: chrono::DateTime<chrono::Utc> = record["next_attempt_at"]
            .as_str()
            .expect("a retrying attempt says when the next one is")
            .parse()
            .unwrap();
        let planned = (next - started).num_milliseconds();
        assert!(
            (planned_ms..planned_ms + 1000).contains(&planned),
            "next_attempt_at is {planned} ms after started_at, schedule says {planned_ms}"
        );
        assert!(record["duration_ms"].is_u64());
    }
    assert!(
        records[2].get("next_attempt_at").is_none_or(Value::is_null),
        "a delivered attempt schedules nothing: {}",
        records[2]
    );

    let (_, view) = app.get(&format!("/v1/events/{id}")).await;
    assert_eq!(view["deliveries"][0]["status"], "delivered", "{view}");
    assert_eq!(view["deliveries"][0]["attempts"], 3, "{view}");
}

#[tokio::test]
async fn retry_after_on_429_pushes_the_next_attempt_later_than_the_schedule() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script([429]);
    receiver.set_header("retry-after", "2");
    create(
        &app,
        json!({
            "url": receiver.url("/"),
            "event_types": [">"],
            "retry": {"schedule_ms": [100], "max_attempts": 3},
        }),
    )
    .await;
    send(&app, json!({"type": "x", "data": {}})).await;

    let requests = exactly(&receiver, 2, DELIVERY_TIMEOUT).await;
    assert_gap(&requests[0], &requests[1], Duration::from_secs(2));
}

#[tokio::test]
async fn retry_after_on_503_is_capped_by_the_configuration() {
    let app = spawn_app_with(|cfg| cfg.delivery.retry_after_cap = Duration::from_millis(700)).await;
    let receiver = Receiver::start().await;
    receiver.script([503]);
    receiver.set_header("retry-after", "3600");
    create(
        &app,
        json!({
            "url": receiver.url("/"),
            "event_types": [">"],
            "retry": {"schedule_ms": [100], "max_attempts": 3},
        }),
    )
    .await;
    send(&app, json!({"type": "x", "data": {}})).await;

    let requests = exactly(&receiver, 2, DELIVERY_TIMEOUT).await;
    assert_gap(&requests[0], &requests[1], Duration::from_millis(700));
}

#[tokio::test]
async fn redirect_is_not_followed_and_counts_as_a_failed_attempt() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    receiver.script([302]);
    receiver.set_header("location", &elsewhere.url("/stolen"));
    let destination = create(
        &app,
        json!({
            "url": receiver.url("/hook"),
            "event_types": [">"],
            "retry": {"schedule_ms": [100], "max_attempts": 3},
        }),
    )
    .await;
    let id = send(&app, json!({"type": "x", "data": {}})).await;

    let requests = exactly(&receiver, 2, DELIVERY_TIMEOUT).await;
    assert_eq!(requests[1].header("hs-attempt"), Some("2"));
    assert!(
        elsewhere
            .recv_timeout(Duration::from_millis(200))
            .await
            .is_none(),
        "the redirect was followed"
    );
    let records = attempt_records(&app, &id, &destination, 2).await;
    assert_eq!(records[0]["status"], 302);
    assert_eq!(records[0]["outcome"], "retrying");
    assert_eq!(records[1]["outcome"], "delivered");
}

#[tokio::test]
async fn exponential_backoff_grows_by_the_factor_up_to_the_cap() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.set_status(500);
    create(
        &app,
        json!({
            "url": receiver.url("/"),
            "event_types": [">"],
            "retry": {
                "backoff": {"base_ms": 200, "factor": 3.0, "max_ms": 1000, "jitter": 0.0},
                "max_attempts": 4,
            },
        }),
    )
    .await;
    send(&app, json!({"type": "x", "data": {}})).await;

    let requests = exactly(&receiver, 4, DELIVERY_TIMEOUT).await;
    // 200, 200·3 = 600, 200·9 = 1800 capped at 1000.
    for (pair, planned_ms) in requests.windows(2).zip([200, 600, 1000]) {
        assert_gap(&pair[0], &pair[1], Duration::from_millis(planned_ms));
    }
    let attempts: Vec<_> = requests.iter().map(|r| r.header("hs-attempt")).collect();
    assert_eq!(attempts, [Some("1"), Some("2"), Some("3"), Some("4")]);
}

#[tokio::test]
async fn attempt_that_times_out_is_recorded_with_a_timeout_error_then_retried() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(2000));
    let destination = create(
        &app,
        json!({
            "url": receiver.url("/slow"),
            "event_types": [">"],
            "timeout_ms": 300,
            "retry": {"schedule_ms": [100], "max_attempts": 3},
        }),
    )
    .await;
    let id = send(&app, json!({"type": "x", "data": {}})).await;

    let first = receiver
        .recv_timeout(DELIVERY_TIMEOUT)
        .await
        .expect("first attempt");
    // The receiver decides its delay on arrival: the retry is answered at once.
    receiver.set_delay(Duration::ZERO);
    let second = receiver
        .recv_timeout(DELIVERY_TIMEOUT)
        .await
        .expect("the retry after the timeout");
    assert_eq!(second.header("hs-attempt"), Some("2"));
    let gap = second.received_at - first.received_at;
    // The timeout runs from the send, a moment before the receiver sees the first
    // request: EARLY absorbs that (a loaded run measured 399.4 ms).
    assert!(
        gap + EARLY >= Duration::from_millis(400) && gap < Duration::from_millis(1900),
        "the retry should follow the 300 ms timeout plus 100 ms, not the 2 s answer: {gap:?}"
    );

    let records = attempt_records(&app, &id, &destination, 2).await;
    assert_eq!(records[0]["outcome"], "retrying");
    assert!(
        records[0].get("status").is_none_or(Value::is_null),
        "no status after a timeout: {}",
        records[0]
    );
    let error = records[0]["error"].as_str().expect("an error text");
    assert!(
        error.contains("timed out"),
        "error should say timeout: {error}"
    );
    let duration = records[0]["duration_ms"].as_u64().unwrap();
    assert!(
        (300..1500).contains(&duration),
        "duration_ms {duration} should be about the 300 ms timeout"
    );
    assert_eq!(records[1]["outcome"], "delivered");
    assert!(
        receiver
            .recv_timeout(Duration::from_millis(600))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn response_body_is_recorded_up_to_4_kib() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script([500]);
    receiver.set_body("a".repeat(10_000));
    let destination = create(
        &app,
        json!({
            "url": receiver.url("/"),
            "event_types": [">"],
            "retry": {"schedule_ms": [50], "max_attempts": 2},
        }),
    )
    .await;
    let id = send(&app, json!({"type": "x", "data": {}})).await;
    exactly(&receiver, 2, DELIVERY_TIMEOUT).await;

    let records = attempt_records(&app, &id, &destination, 2).await;
    let body = records[0]["response_body"].as_str().expect("response body");
    assert_eq!(body.len(), 4096, "recorded response body is cut at 4 KiB");
    assert!(body.bytes().all(|b| b == b'a'));
    assert_eq!(
        records[1]["response_body"].as_str().map(str::len),
        Some(4096)
    );
}

#[tokio::test]
async fn failing_event_holds_the_later_ones_on_an_ordered_destination() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.script([500, 500]);
    create(
        &app,
        json!({
            "url": receiver.url("/"),
            "event_types": [">"],
            "ordered": true,
            "retry": {"schedule_ms": [200], "max_attempts": 5},
        }),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(send(&app, json!({"type": "seq", "data": {"n": n}})).await);
    }

    let requests = exactly(&receiver, 7, DELIVERY_TIMEOUT).await;
    let seen: Vec<(String, String)> = requests
        .iter()
        .map(|r| {
            (
                r.header("webhook-id").unwrap().to_string(),
                r.header("hs-attempt").unwrap().to_string(),
            )
        })
        .collect();
    let mut want = vec![
        (ids[0].clone(), "1".to_string()),
        (ids[0].clone(), "2".to_string()),
        (ids[0].clone(), "3".to_string()),
    ];
    want.extend(ids[1..].iter().map(|id| (id.clone(), "1".to_string())));
    assert_eq!(seen, want, "strict order, the failing event first");
    assert_eq!(receiver.max_concurrent(), 1);
}

#[tokio::test]
async fn event_waiting_for_its_next_attempt_shows_as_retrying() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    receiver.set_status(500);
    let destination = create(
        &app,
        json!({
            "url": receiver.url("/"),
            "event_types": [">"],
            "retry": {"schedule_ms": [60_000], "max_attempts": 3},
        }),
    )
    .await;
    let id = send(&app, json!({"type": "x", "data": {}})).await;
    receiver
        .recv_timeout(DELIVERY_TIMEOUT)
        .await
        .expect("first attempt");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    loop {
        let (_, view) = app.get(&format!("/v1/events/{id}")).await;
        let (_, stats) = app.get("/v1/stats").await;
        let delivery = &view["deliveries"][0];
        let row = &stats["data"][0];
        if delivery["status"] == "retrying" && row["failed_attempts"] == 1 {
            assert_eq!(delivery["destination_id"], destination.as_str());
            assert_eq!(delivery["attempts"], 1, "{delivery}");
            let next: chrono::DateTime<chrono::Utc> = delivery["last_attempt"]["next_attempt_at"]
                .as_str()
                .expect("next_attempt_at")
                .parse()
                .unwrap();
            let ahead = (next - chrono::Utc::now()).num_seconds();
            assert!((50..=60).contains(&ahead), "next attempt in {ahead} s");
            assert_eq!(row["retrying"], 1, "{row}");
            assert_eq!(row["backlog"], 1, "{row}");
            assert_eq!(row["delivered"], 0, "{row}");
            assert_eq!(row["dead_lettered"], 0, "{row}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never showed retrying: {view} {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        receiver
            .recv_timeout(Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn every_non_2xx_status_is_a_failed_attempt_and_any_2xx_a_success() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let failures = [
        400, 401, 403, 404, 409, 422, 429, 500, 502, 504, 301, 307, 308,
    ];
    receiver.script(failures);
    receiver.set_status(204);
    let destination = create(
        &app,
        json!({
            "url": receiver.url("/"),
            "event_types": ["first"],
            "retry": {"schedule_ms": [20], "max_attempts": 20},
        }),
    )
    .await;
    let id = send(&app, json!({"type": "first", "data": {}})).await;
    exactly(&receiver, failures.len() + 1, DELIVERY_TIMEOUT).await;

    let records = attempt_records(&app, &id, &destination, failures.len() + 1).await;
    let statuses: Vec<u64> = records
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    let mut want: Vec<u64> = failures.iter().map(|s| u64::from(*s)).collect();
    want.push(204);
    assert_eq!(statuses, want);
    let outcomes: Vec<&str> = records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes[..failures.len()].iter().all(|o| *o == "retrying"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[failures.len()], "delivered");

    // Other 2xx statuses succeed at the first attempt.
    for status in [200, 201, 202, 299] {
        receiver.script([status]);
        let id = send(&app, json!({"type": "first", "data": {"status": status}})).await;
        let request = receiver
            .recv_timeout(DELIVERY_TIMEOUT)
            .await
            .expect("the event");
        assert_eq!(request.header("hs-attempt"), Some("1"));
        let records = attempt_records(&app, &id, &destination, 1).await;
        assert_eq!(records[0]["outcome"], "delivered", "status {status}");
    }
    assert!(
        receiver
            .recv_timeout(Duration::from_millis(400))
            .await
            .is_none()
    );
}
