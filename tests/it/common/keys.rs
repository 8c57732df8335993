//! API keys in tests: an app that requires keys ([`spawn_keyed_app`], admin key
//! [`ADMIN_KEY`]), requests sent with a key or without ([`Keyed`]), and tenant or ingest
//! keys made through the API ([`make_key`]).

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use hookstream::config::{AdminKeys, Config};

use super::TestApp;

/// The admin key of [`spawn_keyed_app`].
pub const ADMIN_KEY: &str = "test-admin-key-5f1c0c8e2a9b4d7e";

/// An app on its own nats-server that requires keys, with [`ADMIN_KEY`] as admin.
pub async fn spawn_keyed_app() -> TestApp {
    spawn_keyed_app_with(|_| {}).await
}

pub async fn spawn_keyed_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    super::spawn_app_with(|cfg| {
        with_admin_key(cfg);
        adjust(cfg);
    })
    .await
}

pub fn with_admin_key(cfg: &mut Config) {
    cfg.api.auth.admin_keys = AdminKeys(vec![ADMIN_KEY.to_string()]);
}

/// What came back: status, the body as JSON (see `app::send`), and the headers.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: HeaderMap,
}

/// Requests to `app` with `key` (or none) as `Authorization: Bearer`.
pub struct Keyed<'a> {
    pub app: &'a TestApp,
    pub key: Option<String>,
}

impl<'a> Keyed<'a> {
    pub fn new(app: &'a TestApp, key: Option<&str>) -> Self {
        Self {
            app,
            key: key.map(String::from),
        }
    }

    /// Any method; a `Some` body is sent as JSON.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        let mut request = self
            .app
            .client
            .request(method, format!("{}{path}", self.app.base_url()));
        if let Some(key) = &self.key {
            request = request.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(body).expect("serialise a JSON value"));
        }
        let response = request.send().await.expect("request to the app");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("read the answer");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let a = self.call(Method::GET, path, None).await;
        (a.status, a.body)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let a = self.call(Method::POST, path, Some(&body)).await;
        (a.status, a.body)
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let a = self.call(Method::PUT, path, Some(&body)).await;
        (a.status, a.body)
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let a = self.call(Method::PATCH, path, Some(&body)).await;
        (a.status, a.body)
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let a = self.call(Method::DELETE, path, None).await;
        (a.status, a.body)
    }
}

/// Makes a key with the admin key: `(id, key)`.
pub async fn make_key(app: &TestApp, tenant: &str, role: &str) -> (String, String) {
    let admin = Keyed::new(app, Some(ADMIN_KEY));
    let (status, body) = admin
        .post(
            "/v1/api-keys",
            json!({"tenant": tenant, "role": role, "name": format!("{role} of {tenant}")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "create key: {body}");
    (
        body["id"].as_str().expect("key id").to_string(),
        body["key"]
            .as_str()
            .expect("the key, shown once")
            .to_string(),
    )
}
