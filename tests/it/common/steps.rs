//! The steps most tests start with: create a destination, send an event, each asserting
//! the API accepted it and answering the new id.

use reqwest::StatusCode;
use serde_json::Value;

use super::TestApp;

pub async fn create(app: &TestApp, destination: Value) -> String {
    let (status, body) = app.create_destination(destination).await;
    assert_eq!(status, StatusCode::CREATED, "create destination: {body}");
    body["id"].as_str().expect("id").to_string()
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
