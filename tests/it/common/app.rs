//! `spawn_app`: the whole service in-process (API and workers), on a free port, against a
//! fresh nats-server, with short timings for tests. `TestApp` has typed request helpers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use hookstream::app::{App, AppError};
use hookstream::config::Config;

use super::nats::NatsServer;
use super::prometheus::Scrape;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    /// Shared so that several replicas can run on one server and the test can still stop
    /// and restart it.
    pub nats: Arc<NatsServer>,
    /// Cancelling it is the in-process equivalent of SIGTERM.
    pub token: CancellationToken,
    handle: Option<JoinHandle<Result<(), AppError>>>,
}

/// A ready app on its own nats-server, with the test defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], letting the test adjust the config before the app is built.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    // Boxed, like `spawn_app_on`: tests that start several apps keep their own futures
    // small enough for a test thread's stack in debug builds.
    Box::pin(async move {
        let nats = Arc::new(NatsServer::start().await);
        spawn_app_on(&nats, adjust).await
    })
    .await
}

/// Another app (e.g. a second replica) on an existing nats-server.
pub async fn spawn_app_on(nats: &Arc<NatsServer>, adjust: impl FnOnce(&mut Config)) -> TestApp {
    Box::pin(async move {
        super::init_test_tracing();
        // Embedded defaults only: the developer's environment and files must not leak in.
        let mut cfg = Config::defaults();
        cfg.nats.url = Some(nats.url());
        cfg.api.listen = "127.0.0.1:0".to_string();
        // Receivers run on 127.0.0.1, which the SSRF guard refuses by default.
        cfg.security.allow_private_networks = true;
        // Short enough that retry and recovery tests finish in seconds.
        cfg.delivery.sweep_interval = Duration::from_millis(500);
        // Tests of retries and dead letters fail receivers on purpose; the circuit breaker
        // (tested in flow.rs, which sets its own threshold) would hold their events.
        cfg.flow.circuit_failure_threshold = u32::MAX;
        small_streams(&mut cfg);
        adjust(&mut cfg);

        let app = App::build(cfg).await.expect("app builds");
        let address = app.api_address().expect("api enabled");
        let token = CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(token.clone()));

        let test_app = TestApp {
            address,
            client: reqwest::Client::builder()
                // Failing fast beats waiting for nextest's slow-test timeout.
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("build the test HTTP client"),
            nats: nats.clone(),
            token,
            handle: Some(handle),
        };
        test_app.wait_ready().await;
        test_app
    })
    .await
}

impl TestApp {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Polls `GET /readyz` until it answers 200; panics after 20 s.
    pub async fn wait_ready(&self) {
        wait_ready(&self.client, &self.base_url(), READY_TIMEOUT).await;
    }

    /// Cancels the app and waits for it to finish its graceful shutdown; panics if it
    /// fails, panics, or takes more than 30 s.
    pub async fn stop(&mut self) {
        self.token.cancel();
        let Some(handle) = self.handle.take() else {
            return; // already stopped
        };
        match tokio::time::timeout(STOP_TIMEOUT, handle).await {
            Err(_) => panic!("app did not stop within {STOP_TIMEOUT:?}"),
            Ok(Err(join_error)) => panic!("app task panicked: {join_error}"),
            Ok(Ok(Err(app_error))) => panic!("app stopped with an error: {app_error:?}"),
            Ok(Ok(Ok(()))) => {}
        }
    }

    pub async fn post_event(&self, event: Value) -> (StatusCode, Value) {
        self.post("/v1/events", event).await
    }

    pub async fn post_event_with_headers(
        &self,
        event: Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let request = self.client.post(self.url("/v1/events"));
        let request = headers
            .iter()
            .fold(request, |r, (name, value)| r.header(*name, *value));
        send(json_body(request, &event)).await
    }

    pub async fn post_batch(&self, events: Value) -> (StatusCode, Value) {
        self.post("/v1/events/batch", events).await
    }

    pub async fn create_destination(&self, destination: Value) -> (StatusCode, Value) {
        self.post("/v1/destinations", destination).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        send(self.client.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        send(json_body(self.client.post(self.url(path)), &body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        send(json_body(self.client.put(self.url(path)), &body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        send(json_body(self.client.patch(self.url(path)), &body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        send(self.client.delete(self.url(path))).await
    }

    /// A POST with any content type and bytes, for malformed-input tests.
    pub async fn raw_post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let request = self
            .client
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        send(request).await
    }

    /// The app's `/metrics`, parsed; panics if it is not valid Prometheus text.
    pub async fn scrape(&self) -> Scrape {
        let (status, text) = send_text(self.client.get(self.url("/metrics"))).await;
        assert_eq!(status, StatusCode::OK, "GET /metrics: {text}");
        Scrape::parse(&text).unwrap_or_else(|why| panic!("/metrics is not Prometheus text: {why}"))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // A test that did not call stop() still stops the app's tasks; the runtime ending
        // with the test would drop them anyway, but cancelling lets them end in order.
        self.token.cancel();
    }
}

/// reqwest here has no `json` feature: serialise with serde_json ourselves.
fn json_body(request: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
    request
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).expect("serialise a JSON value"))
}

/// Sends and returns the status with the body as JSON: `Null` when empty, a JSON string
/// when the body is not JSON (so the test's assertion shows what came back).
pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request to the app");
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .expect("read the app's response body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, body)
}

/// Sends and returns the status with the body as text.
async fn send_text(request: reqwest::RequestBuilder) -> (StatusCode, String) {
    let response = request.send().await.expect("request to the app");
    let status = response.status();
    let text = response.text().await.expect("read the app's response body");
    (status, text)
}

/// Polls `{base_url}/readyz` until 200; panics after `timeout` with the last answer.
pub async fn wait_ready(client: &reqwest::Client, base_url: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Err(last) = probe_ready(client, base_url).await else {
            return;
        };
        if tokio::time::Instant::now() > deadline {
            panic!("{base_url}/readyz not 200 within {timeout:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One `GET /readyz`: `Ok` on 200, else what came back. Shared with the process fixture,
/// which also watches for its child exiting between probes.
pub async fn probe_ready(client: &reqwest::Client, base_url: &str) -> Result<(), String> {
    match client.get(format!("{base_url}/readyz")).send().await {
        Ok(response) if response.status() == StatusCode::OK => Ok(()),
        Ok(response) => Err(format!("status {}", response.status())),
        Err(err) => Err(format!("error: {err}")),
    }
}

/// Stream limits a test never reaches. JetStream reserves every file stream's `max_bytes`
/// on disk and refuses a stream beyond 75 % of the free space: the defaults reserve
/// 28 GiB per nats-server, so tests failed with "insufficient storage resources" on a
/// disk with less than ~37 GiB free. These reserve 4 GiB; tests of full streams set their
/// own.
const EVENTS_MAX_BYTES: i64 = 1 << 30;
const SHARD_MAX_BYTES: i64 = 64 << 20;
const RETENTION_MAX_BYTES: i64 = 512 << 20;

pub fn small_streams(cfg: &mut Config) {
    cfg.events.max_bytes = EVENTS_MAX_BYTES;
    cfg.events.delivery_max_bytes = SHARD_MAX_BYTES;
    cfg.attempts.max_bytes = RETENTION_MAX_BYTES;
    cfg.dlq.max_bytes = RETENTION_MAX_BYTES;
}

/// The same limits as environment variables, for a service run as a process.
pub fn small_streams_env() -> [(&'static str, String); 4] {
    [
        ("HOOKSTREAM_EVENTS__MAX_BYTES", EVENTS_MAX_BYTES.to_string()),
        (
            "HOOKSTREAM_EVENTS__DELIVERY_MAX_BYTES",
            SHARD_MAX_BYTES.to_string(),
        ),
        (
            "HOOKSTREAM_ATTEMPTS__MAX_BYTES",
            RETENTION_MAX_BYTES.to_string(),
        ),
        ("HOOKSTREAM_DLQ__MAX_BYTES", RETENTION_MAX_BYTES.to_string()),
    ]
}
