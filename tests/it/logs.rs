//! Logs: the real binary at `RUST_LOG=trace` (every library's innermost logs included)
//! in JSON, through a destination's life with secrets in every place they can be: the
//! signing secret (given and rotated), the signatures sent, a destination header, the
//! NATS password in the URL. None of them may appear in the output; the attempt and
//! dead-letter lines must carry the event and destination ids.

use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{NatsServer, Receiver, ServiceProcess};

const WAIT: Duration = Duration::from_secs(20);
const NATS_PASSWORD: &str = "n4ts-pa55word-in-url";
const HEADER_SECRET: &str = "hdr-api-key-7f3a9c";

async fn post(client: &reqwest::Client, url: String, body: Value) -> (StatusCode, Value) {
    let response = client.post(url).json(&body).send().await.expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn no_secret_appears_in_trace_level_logs() {
    let nats = NatsServer::start().await;
    // The test server has no users: it ignores the credentials, but hookstream sends them.
    let nats_url = nats
        .url()
        .replace("nats://", &format!("nats://hookstream:{NATS_PASSWORD}@"));
    let service = ServiceProcess::spawn(
        &nats_url,
        &[("RUST_LOG", "trace"), ("HOOKSTREAM_LOG__FORMAT", "json")],
    )
    .await;
    let base = service.base_url();
    let client = reqwest::Client::new();
    let ok = Receiver::start().await;
    ok.script([500]);
    let gone = Receiver::start().await;
    gone.set_status(500);

    let key = base64::engine::general_purpose::STANDARD.encode(b"logs-test-signing-key-32-bytes!!");
    let given_secret = format!("whsec_{key}");
    let (status, created) = post(
        &client,
        format!("{base}/v1/destinations"),
        json!({
            "url": ok.url("/hooks"),
            "event_types": ["order.*"],
            "secret": given_secret,
            "headers": {"x-api-key": HEADER_SECRET},
            "retry": {"schedule_ms": [100], "max_attempts": 3},
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let delivered_to = created["id"].as_str().unwrap().to_string();
    let (status, failing) = post(
        &client,
        format!("{base}/v1/destinations"),
        json!({"url": gone.url("/"), "event_types": ["order.*"], "retry": {"schedule_ms": [], "max_attempts": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{failing}");
    let dead_lettered_at = failing["id"].as_str().unwrap().to_string();
    let generated_secret = failing["secret"]
        .as_str()
        .expect("secret shown once")
        .to_string();

    let (status, event) = post(
        &client,
        format!("{base}/v1/events"),
        json!({"type": "order.created", "data": {"n": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{event}");
    let event_id = event["id"].as_str().unwrap().to_string();
    let requests = ok.collect(2, WAIT).await;
    assert_eq!(requests.len(), 2);
    assert!(gone.recv_timeout(WAIT).await.is_some());
    let (status, rotated) = post(
        &client,
        format!("{base}/v1/destinations/{delivered_to}/rotate-secret"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let rotated_secret = rotated["secret"]
        .as_str()
        .expect("rotated secret")
        .to_string();
    // Let the last attempt records, acks and the dead letter be logged.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let log = service.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "TRACE"),
        "RUST_LOG=trace took effect"
    );

    let mut secrets = vec![
        NATS_PASSWORD.to_string(),
        HEADER_SECRET.to_string(),
        key.clone(),
        strip(&generated_secret),
        strip(&rotated_secret),
    ];
    for request in &requests {
        let signature = request.header("webhook-signature").expect("signed");
        secrets.extend(
            signature
                .split(' ')
                .map(|s| s.trim_start_matches("v1,").to_string()),
        );
    }
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "secret {secret:?} is in the log:\n{}",
            log.lines()
                .filter(|l| l.contains(secret.as_str()))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // One debug line per attempt outcome, with both ids; the dead letter says whose.
    let with_ids = |message: &str, destination: &str| {
        lines
            .iter()
            .filter(|l| {
                l["message"] == message
                    && l["event_id"] == event_id.as_str()
                    && l["destination_id"] == destination
            })
            .count()
    };
    assert_eq!(with_ids("attempt finished", &delivered_to), 2);
    assert_eq!(with_ids("attempt finished", &dead_lettered_at), 1);
    assert_eq!(with_ids("dead-lettered", &dead_lettered_at), 1);
}

/// The base64 key of a `whsec_` secret: the part that must never be printed.
fn strip(secret: &str) -> String {
    secret.trim_start_matches("whsec_").to_string()
}
