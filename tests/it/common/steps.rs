//! The steps tests are written in: create a destination, send an event (each asserting
//! the API accepted it and answering the new id), assert a receiver stayed quiet, and
//! wait for a condition with [`eventually`] instead of a fixed sleep.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::{Request, TestApp};

pub async fn create(app: &TestApp, destination: Value) -> String {
    let (status, body) = app.create_destination(destination).await;
    assert_eq!(status, StatusCode::CREATED, "create destination: {body}");
    body["id"].as_str().expect("id").to_string()
}

/// `POST /v1/destinations/{id}/<action>` (`pause`, `resume`), asserting it answered 200.
pub async fn act(app: &TestApp, destination: &str, action: &str) {
    let (status, body) = app
        .post(
            &format!("/v1/destinations/{destination}/{action}"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{action} {destination}: {body}");
}

pub async fn send(app: &TestApp, event: Value) -> String {
    let (status, body) = app.post_event(event).await;
    assert_eq!(status, StatusCode::ACCEPTED, "post event: {body}");
    body["id"].as_str().expect("id").to_string()
}

/// The delivery shard of a destination with the default 32 shards (the contract's
/// FNV-1a of the id modulo the shard count).
pub fn delivery_shard(destination: &str) -> String {
    delivery_shard_of(destination, 32)
}

pub fn delivery_shard_of(destination: &str, shards: u32) -> String {
    let hash = destination.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("HS_DLV_{}", hash % shards)
}

/// Deliveries stored for a destination on its shard (waiting, or handed out and not
/// acknowledged yet), read the way any NATS client can: the shard's count per subject.
pub async fn deliveries_waiting(app: &TestApp, destination: &str) -> u64 {
    use futures::TryStreamExt;
    let js = async_nats::jetstream::new(app.nats.client().await);
    let shard = delivery_shard(destination);
    let k = shard.trim_start_matches("HS_DLV_");
    let stream = js.get_stream(&shard).await.expect("delivery shard");
    let mut subjects = stream
        .info_with_subjects(format!("hs.dlv.{k}.{destination}"))
        .await
        .expect("shard subjects");
    subjects
        .try_next()
        .await
        .expect("shard subjects")
        .map_or(0, |(_, n)| n as u64)
}

/// Creates a destination through the HTTP API at `base_url` (a service process, a
/// replica started apart) and answers its id.
pub async fn create_at(base_url: &str, destination: Value) -> String {
    let request = reqwest::Client::new()
        .post(format!("{base_url}/v1/destinations"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(destination.to_string());
    let (status, body) = super::app::send(request).await;
    assert_eq!(status, StatusCode::CREATED, "create destination: {body}");
    body["id"].as_str().expect("id").to_string()
}

/// Fails the test with what came when `what` should have stayed quiet: a receiver's
/// `recv_timeout` answered a request.
#[track_caller]
pub fn assert_quiet(request: Option<Request>, what: &str) {
    if let Some(r) = request {
        panic!(
            "{what}: unexpected request {} {} webhook-id={:?} attempt={:?} type={:?} body={:?}",
            r.method,
            r.uri,
            r.header("webhook-id"),
            r.header("hs-attempt"),
            r.header("hs-event-type"),
            r.body
        );
    }
}

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(50);

/// Asks `probe` every 50 ms until it answers `Ok`, and returns that. `Err` says what was
/// seen instead; the last one is the failure message once `within` has passed.
pub async fn eventually<T>(
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match probe().await {
            Ok(done) => return done,
            Err(seen) if tokio::time::Instant::now() >= deadline => {
                panic!("not within {within:?}: {seen}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}
