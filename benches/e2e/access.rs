//! What the API key check costs: single-event ingest with a tenant key against the same
//! without a key, on one service (open on loopback, so both are accepted) and one NATS,
//! in alternating rounds so that drift (a growing stream, the machine's other load) falls
//! on both alike. The check is one SHA-256 and one map look-up per request (ADR 0009).

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::harness::{Nats, Service, http_client};

/// Rounds per mode; each round posts `total / (2 * ROUNDS)` events.
const ROUNDS: usize = 8;

pub async fn ingest_with_and_without_key(total: usize) -> Value {
    let nats = Nats::start();
    let service = Service::start(&nats.url(), "api", &[]).await;
    let client = http_client();
    let created: Value = client
        .post(format!("{}/v1/api-keys", service.base()))
        .json(&json!({"tenant": "bench", "role": "ingest"}))
        .send()
        .await
        .expect("create a key")
        .json()
        .await
        .expect("key JSON");
    let key = created["key"].as_str().expect("the key").to_string();
    let url = format!("{}/v1/events", service.base());
    let per_round = (total / (2 * ROUNDS)).max(1);
    let pad = "x".repeat(400);
    let (mut keyed, mut open) = (Duration::ZERO, Duration::ZERO);
    // A warm-up round of each, not counted: connections, JIT-free but cache-cold paths.
    for counted in std::iter::once(false).chain(std::iter::repeat_n(true, ROUNDS)) {
        for with_key in [true, false] {
            let started = Instant::now();
            futures::stream::iter(0..per_round)
                .map(|i| {
                    let body = json!({"type": "bench.keyed", "data": {"i": i, "pad": pad}});
                    let mut request = client.post(&url).json(&body);
                    if with_key {
                        request = request.bearer_auth(&key);
                    }
                    async move { assert_eq!(request.send().await.expect("post").status(), 202) }
                })
                .buffer_unordered(64)
                .for_each(|_| async {})
                .await;
            if counted {
                *if with_key { &mut keyed } else { &mut open } += started.elapsed();
            }
        }
    }
    let events = (per_round * ROUNDS) as f64;
    let with_key = events / keyed.as_secs_f64();
    let without_key = events / open.as_secs_f64();
    json!({
        "events_per_mode": events,
        "with_key_per_second": with_key,
        "without_key_per_second": without_key,
        "key_cost_percent": (without_key - with_key) / without_key * 100.0,
    })
}
