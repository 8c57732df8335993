//! `Load`: a steady stream of `POST /v1/events` spread over several service replicas, kept
//! on until the test stops it. Each event has its own id and is retried (same id) until it
//! is stored, so "accepted" means exactly the events the service answered 202 (or 200
//! `duplicate`: an earlier try was stored but its answer lost). Anything but 202/200/503
//! is recorded as unexpected, for the test to fail on.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long one event may take to be accepted before the load gives up on it (and the
/// test fails): longer than any outage the tests cause.
const ACCEPT_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Counters {
    accepted: Mutex<HashSet<String>>,
    unavailable: AtomicUsize,
    transport_errors: AtomicUsize,
    unexpected: Mutex<Vec<String>>,
}

pub struct Load {
    counters: Arc<Counters>,
    stop: CancellationToken,
    workers: JoinSet<()>,
}

/// What the load saw, once stopped.
pub struct LoadReport {
    pub accepted: HashSet<String>,
    /// 503 answers (retried): NATS lost its leader or quorum for a moment.
    pub unavailable: usize,
    /// Requests that got no HTTP answer at all (retried).
    pub transport_errors: usize,
    /// Answers other than 202, 200 `duplicate` and 503, or events never accepted.
    pub unexpected: Vec<String>,
}

impl Load {
    /// `workers` producers, each posting one event at a time to the targets in turn and
    /// pausing `pause` between events, with ids `<prefix>-<n>`.
    pub fn start(targets: Vec<String>, workers: usize, pause: Duration, prefix: &str) -> Load {
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let next = Arc::new(AtomicUsize::new(0));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("build the HTTP client");
        let mut set = JoinSet::new();
        for _ in 0..workers {
            let (counters, stop, next, client, targets) = (
                counters.clone(),
                stop.clone(),
                next.clone(),
                client.clone(),
                targets.clone(),
            );
            let prefix = prefix.to_string();
            set.spawn(async move {
                while !stop.is_cancelled() {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let id = format!("{prefix}-{n}");
                    let target = &targets[n % targets.len()];
                    post_until_stored(&client, target, &id, n, &counters).await;
                    tokio::time::sleep(pause).await;
                }
            });
        }
        Load {
            counters,
            stop,
            workers: set,
        }
    }

    pub fn accepted_count(&self) -> usize {
        self.counters.accepted.lock().expect("accepted lock").len()
    }

    /// Waits until `more` further events were accepted, or `timeout` passes; returns
    /// whether they were.
    pub async fn wait_for_more(&self, more: usize, timeout: Duration) -> bool {
        let goal = self.accepted_count() + more;
        let deadline = tokio::time::Instant::now() + timeout;
        while self.accepted_count() < goal {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Stops taking new events, lets the ones in progress finish, and reports.
    pub async fn stop(mut self) -> LoadReport {
        self.stop.cancel();
        while let Some(done) = self.workers.join_next().await {
            done.expect("load worker");
        }
        let counters = &self.counters;
        LoadReport {
            accepted: counters.accepted.lock().expect("accepted lock").clone(),
            unavailable: counters.unavailable.load(Ordering::Relaxed),
            transport_errors: counters.transport_errors.load(Ordering::Relaxed),
            unexpected: counters.unexpected.lock().expect("unexpected lock").clone(),
        }
    }
}

async fn post_until_stored(
    client: &reqwest::Client,
    target: &str,
    id: &str,
    n: usize,
    counters: &Counters,
) {
    let event = json!({"id": id, "type": "order.created", "data": {"n": n}});
    let url = format!("{target}/v1/events");
    let deadline = tokio::time::Instant::now() + ACCEPT_DEADLINE;
    while tokio::time::Instant::now() < deadline {
        let answer = client
            .post(&url)
            .header(CONTENT_TYPE, "application/json")
            .body(event.to_string())
            .send()
            .await;
        let response = match answer {
            Ok(response) => response,
            Err(_) => {
                counters.transport_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let status = response.status();
        let body: Value = response
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let stored = status == StatusCode::ACCEPTED
            || (status == StatusCode::OK && body["duplicate"] == true);
        if stored {
            counters
                .accepted
                .lock()
                .expect("accepted lock")
                .insert(id.to_string());
            return;
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            counters.unavailable.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        counters
            .unexpected
            .lock()
            .expect("unexpected lock")
            .push(format!("POST {id}: {status} {body}"));
        return;
    }
    counters
        .unexpected
        .lock()
        .expect("unexpected lock")
        .push(format!("{id} not accepted within {ACCEPT_DEADLINE:?}"));
}
