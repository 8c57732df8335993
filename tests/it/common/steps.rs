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
