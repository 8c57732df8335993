//! At-least-once through the real binary's death: SIGKILL mid-load loses no accepted event
//! (the next process redelivers what was in flight after the ack wait), and SIGTERM lets
//! in-flight deliveries finish, exits 0 within the grace period, and leaves the rest for
//! the next start.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::common::seen::Seen;
use crate::common::{NatsServer, Receiver, ServiceProcess};

/// Ack wait = destination timeout (2 s) + this margin (the configured minimum).
const ACK_WAIT_MARGIN_MS: &str = "1000";
const TIMEOUT_MS: u64 = 2000;

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build the HTTP client")
}

async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> (StatusCode, Value) {
    let response = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).expect("serialise"))
        .send()
        .await
        .unwrap_or_else(|err| panic!("POST {url}: {err}"));
    let status = response.status();
    let bytes = response.bytes().await.expect("response body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn create_destination(service: &ServiceProcess, receiver: &Receiver, max_in_flight: u32) {
    crate::common::steps::create_at(
        &service.base_url(),
        json!({
            "url": receiver.url("/hook"),
            "event_types": ["order.*"],
            "timeout_ms": TIMEOUT_MS,
            "max_in_flight": max_in_flight,
            "retry": {"schedule_ms": [200, 500, 1000], "max_attempts": 30},
        }),
    )
    .await;
}

/// Posts events `crash-0 … crash-{n-1}` with `concurrency` requests at a time to whichever
/// service `target` names now. An event is retried (same id) until the service answers
/// 202, or 200 with `duplicate: true` (an earlier try was accepted but its answer lost
/// in the crash); both mean the event is stored. `accepted` collects the accepted ids.
fn produce(
    n: usize,
    concurrency: usize,
    target: watch::Receiver<String>,
    accepted: Arc<Mutex<HashSet<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = http_client();
        let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let permit = permits.clone().acquire_owned().await.expect("semaphore");
            let (client, target, accepted) = (client.clone(), target.clone(), accepted.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let id = format!("crash-{i}");
                let event = json!({"id": id, "type": "order.created", "data": {"i": i}});
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let url = format!("{}/v1/events", target.borrow().clone());
                    let answer = client
                        .post(&url)
                        .header(CONTENT_TYPE, "application/json")
                        .body(event.to_string())
                        .send()
                        .await;
                    if let Ok(response) = answer {
                        let status = response.status();
                        let body = json_or_null(response).await;
                        let stored = status == StatusCode::ACCEPTED
                            || (status == StatusCode::OK && body["duplicate"] == true);
                        if stored {
                            accepted.lock().expect("accepted lock").insert(id);
                            return;
                        }
                        // 503 while the new process connects is fine; anything else is not.
                        assert!(
                            status == StatusCode::SERVICE_UNAVAILABLE,
                            "POST {id}: {status} {body}"
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "event {id} not accepted within 60 s"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("producer task");
        }
    })
}

/// The body as JSON; `Null` if it is not JSON or the connection broke while reading it.
async fn json_or_null(response: reqwest::Response) -> Value {
    match response.bytes().await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Receives until every id in `wanted` was seen, or panics after `timeout` naming the
/// missing ones.
async fn receive_all(
    receiver: &Receiver,
    seen: &mut Seen,
    wanted: &HashSet<String>,
    timeout: Duration,
    log: impl Fn() -> String,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !seen.missing(wanted).is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match receiver.recv_timeout(left).await {
            Some(request) => seen.add(&request),
            None => {
                let missing = seen.missing(wanted);
                panic!(
                    "{} of {} accepted events never delivered within {timeout:?}: {:?}…\nservice log:\n{}",
                    missing.len(),
                    wanted.len(),
                    &missing[..missing.len().min(20)],
                    log()
                );
            }
        }
    }
}

#[tokio::test]
async fn no_accepted_event_is_lost_when_the_service_is_killed_mid_load() {
    const EVENTS: usize = 300;
    const KILL_AFTER: usize = 100;
    let started = Instant::now();
    let nats = NatsServer::start().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(20));
    let env = [
        (
            "HOOKSTREAM_DELIVERY__ACK_WAIT_MARGIN_MS",
            ACK_WAIT_MARGIN_MS,
        ),
        ("HOOKSTREAM_DELIVERY__SWEEP_INTERVAL_MS", "300"),
    ];
    let mut first = ServiceProcess::spawn(&nats.url(), &env).await;
    create_destination(&first, &receiver, 32).await;

    let (target_tx, target_rx) = watch::channel(first.base_url());
    let accepted = Arc::new(Mutex::new(HashSet::new()));
    let producer = produce(EVENTS, 16, target_rx, accepted.clone());

    let mut seen = Seen::default();
    while seen.distinct() < KILL_AFTER {
        let request = receiver
            .recv_timeout(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "only {} events delivered before the crash; log:\n{}",
                    seen.distinct(),
                    first.log()
                )
            });
        seen.add(&request);
    }
    let in_flight_at_kill = receiver.open_requests();
    first.kill9();
    let killed_at = Instant::now();
    let accepted_at_kill = accepted.lock().expect("accepted lock").len();
    eprintln!(
        "killed after {} delivered, {accepted_at_kill} accepted, {in_flight_at_kill} requests open at the receiver",
        seen.distinct(),
    );

    let second = ServiceProcess::spawn(&nats.url(), &env).await;
    target_tx.send_replace(second.base_url());
    tokio::time::timeout(Duration::from_secs(60), producer)
        .await
        .expect("the producer finishes")
        .expect("producer task");
    let accepted = accepted.lock().expect("accepted lock").clone();
    assert_eq!(accepted.len(), EVENTS, "every event is eventually accepted");

    // Ack wait (3 s) + a sweep + slack for a loaded machine.
    receive_all(
        &receiver,
        &mut seen,
        &accepted,
        Duration::from_secs(30),
        || second.log(),
    )
    .await;
    let total = seen.requests();
    eprintln!(
        "crash test: {} events, {} requests, {} duplicates; recovered {:?} after the kill, {:?} in all",
        accepted.len(),
        total,
        seen.duplicates(),
        killed_at.elapsed(),
        started.elapsed()
    );
    // Nothing the receiver got is an event nobody accepted.
    let strangers = seen.ids_not_in(&accepted);
    assert!(
        strangers.is_empty(),
        "unexpected webhook ids: {strangers:?}"
    );
}

#[tokio::test]
async fn sigterm_finishes_in_flight_deliveries_exits_zero_and_leaves_the_rest_for_the_next_start() {
    const EVENTS: usize = 60;
    const GRACE: Duration = Duration::from_secs(8);
    let nats = NatsServer::start().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(500));
    let grace_ms = GRACE.as_millis().to_string();
    let env = [
        (
            "HOOKSTREAM_DELIVERY__ACK_WAIT_MARGIN_MS",
            ACK_WAIT_MARGIN_MS,
        ),
        ("HOOKSTREAM_DELIVERY__SWEEP_INTERVAL_MS", "300"),
        ("HOOKSTREAM_DELIVERY__SHUTDOWN_GRACE_MS", grace_ms.as_str()),
    ];
    let mut first = ServiceProcess::spawn(&nats.url(), &env).await;
    // 10 at a time, 500 ms each: 60 events take 3 s, so SIGTERM lands mid-way.
    create_destination(&first, &receiver, 10).await;

    let client = http_client();
    let url = format!("{}/v1/events", first.base_url());
    let mut accepted = HashSet::new();
    for i in 0..EVENTS {
        let id = format!("term-{i}");
        let (status, body) = post_json(
            &client,
            &url,
            &json!({"id": id, "type": "order.created", "data": {"i": i}}),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{id}: {body}");
        accepted.insert(id);
    }

    let mut seen = Seen::default();
    while seen.distinct() < 10 {
        let request = receiver
            .recv_timeout(Duration::from_secs(15))
            .await
            .expect("deliveries start");
        seen.add(&request);
    }
    let open_at_term = receiver.open_requests();
    assert!(
        open_at_term > 0,
        "no delivery in flight when SIGTERM is sent"
    );
    first.terminate();
    let sent_at = Instant::now();
    let status = first.wait_exit(GRACE).await.unwrap_or_else(|| {
        panic!(
            "still running {GRACE:?} after SIGTERM; log:\n{}",
            first.log()
        )
    });
    let took = sent_at.elapsed();
    assert!(
        status.success(),
        "exit after SIGTERM: {status}; log:\n{}",
        first.log()
    );
    // What was sent before the exit; nothing can arrive from the dead process later.
    for request in receiver.drain().await {
        seen.add(&request);
    }
    let delivered_before = seen.distinct();
    eprintln!(
        "SIGTERM with {open_at_term} in flight: exited 0 after {took:?}, {delivered_before} of {EVENTS} delivered"
    );
    assert!(
        delivered_before < EVENTS,
        "everything was delivered before SIGTERM; the test proves nothing"
    );

    let second = ServiceProcess::spawn(&nats.url(), &env).await;
    receiver.set_delay(Duration::from_millis(20));
    receive_all(
        &receiver,
        &mut seen,
        &accepted,
        Duration::from_secs(30),
        || second.log(),
    )
    .await;
    // In-flight deliveries finished and were acked before the exit, so the next process
    // sends none of them again.
    eprintln!("graceful restart: {} duplicates", seen.duplicates());
    assert_eq!(
        seen.duplicates(),
        0,
        "deliveries finished before a graceful exit were sent again: {:?}",
        seen.repeated()
    );
}
