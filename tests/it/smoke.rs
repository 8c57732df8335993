//! The fixtures themselves work: if these fail, every other test's failure is suspect.
//! Nothing here uses hookstream's own code.

use std::net::TcpStream;
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::common::{NatsServer, Receiver};

#[tokio::test]
async fn nats_fixture_starts_restarts_and_cleans_up() {
    let nats = NatsServer::start().await;
    let port = nats.port();
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));

    // A file-backed stream, so the message must survive a crash of the server.
    let js = jetstream::new(nats.client().await);
    js.create_stream(stream::Config {
        name: "SMOKE".to_string(),
        subjects: vec!["smoke.>".to_string()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create the stream");
    let ack = js
        .publish("smoke.hello", "persisted".into())
        .await
        .expect("publish")
        .await
        .expect("PubAck");
    assert_eq!(ack.sequence, 1);

    nats.stop();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts after stop()"
    );

    nats.restart().await;
    assert_eq!(nats.port(), port, "restart keeps the port");
    // A new client: the old one may still be backing off between reconnect attempts.
    let js = jetstream::new(nats.client().await);
    let stream = js
        .get_stream("SMOKE")
        .await
        .expect("the stream survives a restart");
    let message = stream
        .get_raw_message(1)
        .await
        .expect("message 1 survives a restart");
    assert_eq!(message.subject.as_str(), "smoke.hello");
    assert_eq!(&message.payload[..], b"persisted");

    let pid = nats.pid().expect("server running");
    let store = nats.store_dir().to_path_buf();
    drop(nats);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "nats-server {pid} outlived the fixture"
    );
    assert!(
        !store.exists(),
        "store dir {} outlived the fixture",
        store.display()
    );
}

#[tokio::test]
async fn receiver_records_requests_and_scripts_statuses() {
    let receiver = Receiver::start().await;
    receiver.set_status(202);
    receiver.script([500, 503, 200]);
    receiver.set_header("retry-after", "7");
    let client = reqwest::Client::new();

    let mut statuses = Vec::new();
    for i in 0..4 {
        let response = client
            .post(receiver.url(&format!("/hooks/{i}?attempt={i}")))
            .header("webhook-id", format!("msg_{i}"))
            .body(format!(r#"{{"n":{i}}}"#))
            .send()
            .await
            .expect("post to the receiver");
        assert_eq!(response.headers()["retry-after"], "7");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses,
        [500, 503, 200, 202],
        "script first, then the default status"
    );

    let requests = receiver.collect(4, Duration::from_secs(5)).await;
    assert_eq!(requests.len(), 4);
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(request.method, "POST");
        assert_eq!(request.uri, format!("/hooks/{i}?attempt={i}"));
        assert_eq!(
            request.header("webhook-id"),
            Some(format!("msg_{i}").as_str())
        );
        assert_eq!(request.json(), serde_json::json!({ "n": i }));
    }
    assert!(
        receiver
            .recv_timeout(Duration::from_millis(100))
            .await
            .is_none()
    );

    // Delayed answers overlap, and the receiver counts how many were open at once.
    receiver.set_delay(Duration::from_millis(300));
    let slow = (0..3).map(|_| client.get(receiver.url("/slow")).send());
    for response in futures::future::join_all(slow).await {
        assert_eq!(response.expect("slow request").status(), 202);
    }
    assert_eq!(receiver.max_concurrent(), 3);
    assert_eq!(receiver.open_requests(), 0);
    let slow_requests = receiver.collect(3, Duration::from_secs(5)).await;
    assert!(
        slow_requests
            .iter()
            .all(|r| r.method == "GET" && r.body.is_empty())
    );
}
