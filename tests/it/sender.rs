//! The delivery client's own HTTP behaviour (ADR 0018), seen by real receivers: the
//! request line and headers it writes, user info in a URL, the SSRF guard on an address
//! that only a `GET` template reveals, HTTPS (platform trust, HTTP/1.1 only), and the
//! error texts of failed exchanges (users read them in attempts and `Hs-Last-Error`).
//! Timeouts, redirects, the 4 KiB body cap and `Retry-After` are in `retry.rs`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::steps::{assert_quiet, create, create_at, eventually, send};
use crate::common::tls::TestCa;
use crate::common::{
    NatsServer, Receiver, Request, ServiceProcess, TestApp, spawn_app, spawn_app_with,
};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Long enough for a request that should not come to have come.
const QUIET: Duration = Duration::from_millis(500);

async fn next(receiver: &Receiver) -> Request {
    receiver
        .recv_timeout(DELIVERY_TIMEOUT)
        .await
        .expect("a delivery")
}

/// The first attempt record of `event` at `destination`, once it is there.
async fn first_attempt(app: &TestApp, event: &str, destination: &str) -> Value {
    eventually(DELIVERY_TIMEOUT, async || {
        let (_, view) = app.get(&format!("/v1/events/{event}/attempts")).await;
        view["destinations"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["destination_id"] == destination)
            .and_then(|d| d["attempts"][0].as_object().cloned())
            .map(Value::Object)
            .ok_or_else(|| format!("no attempt at {destination}: {view}"))
    })
    .await
}

/// A server that reads a request head, writes `answer` as is, then holds the connection
/// for `hold` before closing it: the ways a broken destination answers.
async fn raw_server(answer: &'static [u8], hold: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the raw server");
    let port = listener.local_addr().expect("raw server address").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut head).await;
                let _ = socket.write_all(answer).await;
                tokio::time::sleep(hold).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn request_names_the_host_with_its_port_and_the_exact_body_length() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    create(
        &app,
        json!({"url": receiver.url("/hook?x=1"), "event_types": [">"]}),
    )
    .await;
    send(&app, json!({"type": "a.b", "data": {"n": 1}})).await;

    let request = next(&receiver).await;
    assert_eq!(request.method, "POST");
    assert_eq!(request.uri, "/hook?x=1", "origin-form path and query");
    let host = format!("127.0.0.1:{}", receiver.address().port());
    assert_eq!(request.header("host"), Some(host.as_str()));
    assert_eq!(
        request.header("content-length"),
        Some(request.body.len().to_string().as_str())
    );
    assert!(request.header("transfer-encoding").is_none(), "not chunked");
    assert_eq!(request.header("accept"), Some("*/*"), "as reqwest sent it");
}

#[tokio::test]
async fn user_info_in_the_url_travels_as_basic_authorization() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let port = receiver.address().port();
    create(
        &app,
        json!({
            "url": format!("http://alice:p%40ss%3Aword@127.0.0.1:{port}/hook"),
            "event_types": [">"],
        }),
    )
    .await;
    send(&app, json!({"type": "a.b", "data": {}})).await;

    let request = next(&receiver).await;
    let expected = format!("Basic {}", BASE64.encode("alice:p@ss:word"));
    assert_eq!(request.header("authorization"), Some(expected.as_str()));
    let host = format!("127.0.0.1:{port}");
    assert_eq!(request.header("host"), Some(host.as_str()), "no user info");
}

/// Saving checks the template, which names no address; the address the event fills in is
/// checked before the request is sent (literals never reach the guarded resolver).
#[tokio::test]
async fn an_address_literal_filled_into_a_get_template_is_refused_before_sending() {
    let app = spawn_app_with(|cfg| {
        cfg.security.allow_private_networks = false;
        cfg.security.ssrf_allowlist = Vec::new();
    })
    .await;
    let receiver = Receiver::start().await;
    let port = receiver.address().port();
    let destination = create(
        &app,
        json!({
            "url": format!("http://{{host}}:{port}/hook"),
            "method": "GET",
            "event_types": [">"],
            "retry": {"schedule_ms": [], "max_attempts": 1},
        }),
    )
    .await;
    let id = send(&app, json!({"type": "a.b", "data": {"host": "127.0.0.1"}})).await;

    let attempt = first_attempt(&app, &id, &destination).await;
    let error = attempt["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("refused by SSRF guard: 127.0.0.1 is a private"),
        "{attempt}"
    );
    assert!(
        attempt.get("status").is_none_or(Value::is_null),
        "{attempt}"
    );
    assert_quiet(receiver.recv_timeout(QUIET).await, "refused address");
}

#[tokio::test]
async fn https_destination_with_an_untrusted_certificate_fails_to_connect() {
    let app = spawn_app().await;
    let ca = TestCa::create();
    let receiver = Receiver::start_tls(ca.server_config()).await;
    let destination = create(
        &app,
        json!({
            "url": format!("https://127.0.0.1:{}/hook", receiver.address().port()),
            "event_types": [">"],
            "retry": {"schedule_ms": [], "max_attempts": 1},
        }),
    )
    .await;
    let id = send(&app, json!({"type": "a.b", "data": {}})).await;

    let attempt = first_attempt(&app, &id, &destination).await;
    assert_eq!(
        attempt["error"], "connection failed: invalid peer certificate: UnknownIssuer",
        "the test CA is not among the system's roots: {attempt}"
    );
    assert_quiet(receiver.recv_timeout(QUIET).await, "untrusted certificate");
}

/// The real binary with the test CA as its only root (`SSL_CERT_FILE`, which the platform
/// verifier reads on Linux): delivered over TLS to a name, by HTTP/1.1 even though the
/// receiver prefers `h2`.
#[tokio::test]
async fn https_destination_signed_by_a_trusted_root_is_delivered_over_http1() {
    let nats = NatsServer::start().await;
    let ca = TestCa::create();
    let ca_file = ca.ca_file();
    let service = ServiceProcess::spawn(
        &nats.url(),
        &[("SSL_CERT_FILE", ca_file.to_str().expect("UTF-8 temp path"))],
    )
    .await;
    let receiver = Receiver::start_tls(ca.server_config()).await;
    let port = receiver.address().port();
    create_at(
        &service.base_url(),
        json!({"url": format!("https://localhost:{port}/hook"), "event_types": [">"]}),
    )
    .await;
    let (status, body) = service
        .post("/v1/events", &json!({"type": "a.b", "data": {"n": 1}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    let request = next(&receiver).await;
    assert_eq!(request.header("webhook-id"), body["id"].as_str());
    let host = format!("localhost:{port}");
    assert_eq!(request.header("host"), Some(host.as_str()));
    assert_eq!(request.json()["data"], json!({"n": 1}));
    assert_eq!(
        receiver.negotiated_alpn(),
        [Some(b"http/1.1".to_vec())],
        "one TLS connection, ALPN offering only http/1.1"
    );
}

/// One attempt to `url` (a destination of its own), answered with its status, error and
/// response body.
async fn attempt_to(app: &TestApp, url: &str, timeout_ms: u64) -> (Value, String, Value) {
    let destination = create(
        app,
        json!({
            "url": url,
            "event_types": [">"],
            "timeout_ms": timeout_ms,
            "retry": {"schedule_ms": [], "max_attempts": 1},
        }),
    )
    .await;
    let event = send(app, json!({"type": "a.b", "data": {}})).await;
    let attempt = first_attempt(app, &event, &destination).await;
    let error = attempt["error"].as_str().unwrap_or_default().to_string();
    (
        attempt["status"].clone(),
        error,
        attempt["response_body"].clone(),
    )
}

/// The texts reqwest produced, checked against it when the client was replaced (ADR 0018).
#[tokio::test]
async fn failed_exchanges_are_described_as_before() {
    let app = spawn_app().await;
    let nobody = crate::common::free_port();
    assert_eq!(
        attempt_to(&app, &format!("http://127.0.0.1:{nobody}/x"), 1000).await,
        (
            Value::Null,
            "connection failed: Connection refused (os error 111)".into(),
            Value::Null
        )
    );

    let port = raw_server(b"", Duration::ZERO).await;
    // The query (where receivers often carry a token) is not shown.
    let url = format!("http://127.0.0.1:{port}/x?token=s3cr3t");
    let expected = format!(
        "error sending request for url (http://127.0.0.1:{port}/x): client error (SendRequest): connection closed before message completed"
    );
    assert_eq!(
        attempt_to(&app, &url, 1000).await,
        (Value::Null, expected, Value::Null)
    );

    let port = raw_server(b"garbage\r\n\r\n", Duration::ZERO).await;
    let url = format!("http://127.0.0.1:{port}/x");
    let (status, error, _) = attempt_to(&app, &url, 1000).await;
    assert_eq!(status, Value::Null);
    assert_eq!(
        error,
        format!(
            "error sending request for url ({url}): client error (SendRequest): invalid HTTP version parsed"
        )
    );

    // Silence: the total timeout, whether no answer comes or the body stalls.
    let port = raw_server(b"", Duration::from_secs(10)).await;
    let url = format!("http://127.0.0.1:{port}/x");
    assert_eq!(
        attempt_to(&app, &url, 300).await,
        (Value::Null, "timed out after 300 ms".into(), Value::Null)
    );
    const PARTIAL: &[u8] = b"HTTP/1.1 500 Oops\r\ncontent-length: 100\r\n\r\nabc";
    let port = raw_server(PARTIAL, Duration::from_secs(10)).await;
    assert_eq!(
        attempt_to(&app, &format!("http://127.0.0.1:{port}/x"), 500).await,
        (json!(500), "timed out after 500 ms".into(), json!("abc"))
    );
    let port = raw_server(PARTIAL, Duration::ZERO).await;
    assert_eq!(
        attempt_to(&app, &format!("http://127.0.0.1:{port}/x"), 1000).await,
        (
            json!(500),
            "error decoding response body: request or response body error: error reading a body from connection: end of file before message length reached".into(),
            json!("abc")
        )
    );
}
