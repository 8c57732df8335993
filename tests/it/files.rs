//! Files in, webhooks out: uploads and the watched folder, one event per line, through
//! a SIGKILL mid-file and with two replicas on one folder; refused uploads leave nothing.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{
    NatsServer, Receiver, ServiceProcess, TestApp, spawn_app_on, spawn_app_with, steps,
};

const DONE_TIMEOUT: Duration = Duration::from_secs(60);

/// Rows `0..n` of a CSV whose fields need quoting now and then.
fn users_csv(n: usize) -> String {
    let mut out = String::from("\u{feff}id,name,note\r\n");
    for i in 0..n {
        if i % 100 == 7 {
            out.push_str(&format!(
                "{i},\"Doe, J{i}\",\"says \"\"hi\"\"\nand bye\"\r\n"
            ));
        } else {
            out.push_str(&format!("{i},user{i},plain\r\n"));
        }
    }
    out
}

fn expected_row(i: usize) -> Value {
    if i % 100 == 7 {
        json!({"id": i.to_string(), "name": format!("Doe, J{i}"), "note": "says \"hi\"\nand bye"})
    } else {
        json!({"id": i.to_string(), "name": format!("user{i}"), "note": "plain"})
    }
}

async fn upload(
    app: &TestApp,
    query: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    app.raw_post(&format!("/v1/uploads?{query}"), content_type, body)
        .await
}

/// Polls `GET /v1/uploads/{id}` (at `base`) until the file is done or failed.
async fn wait_finished(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let deadline = Instant::now() + DONE_TIMEOUT;
    loop {
        let (status, body) =
            crate::common::app::send(client.get(format!("{base}/v1/uploads/{id}"))).await;
        if status == StatusCode::OK && matches!(body["status"].as_str(), Some("done" | "failed")) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "upload {id} not finished: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every `Nats-Msg-Id` on HS_EVENTS (all of them, duplicates included).
async fn stored_event_ids(nats: &NatsServer) -> Vec<String> {
    let js = async_nats::jetstream::new(nats.client().await);
    let mut stream = js.get_stream("HS_EVENTS").await.expect("HS_EVENTS");
    let total = stream.info().await.expect("stream info").state.messages;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            headers_only: true,
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut ids = Vec::with_capacity(total as usize);
    while (ids.len() as u64) < total {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("HS_EVENTS read in time")
            .expect("a message")
            .expect("a good message");
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .expect("every event has a Nats-Msg-Id");
        ids.push(id);
    }
    ids
}

async fn stream_messages(nats: &NatsServer, name: &str) -> u64 {
    let js = async_nats::jetstream::new(nats.client().await);
    let mut stream = js.get_stream(name).await.expect("stream");
    stream.info().await.expect("info").state.messages
}

#[tokio::test]
async fn csv_upload_is_delivered_once_per_row_and_the_same_bytes_again_are_a_duplicate() {
    let app = spawn_app_with(|_| {}).await;
    let receiver = Receiver::start().await;
    steps::create(
        &app,
        json!({"url": receiver.url("/hook"), "event_types": ["user.imported"]}),
    )
    .await;
    let csv = users_csv(2000);

    let (status, body) = upload(
        &app,
        "type=user.imported&name=users.csv",
        "text/csv",
        csv.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "queued");
    let id = body["id"].as_str().expect("id").to_string();

    let done = wait_finished(&app.client, &app.base_url(), &id).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(
        (
            done["lines"].as_u64(),
            done["accepted"].as_u64(),
            done["rejected"].as_u64()
        ),
        (Some(2000), Some(2000), Some(0)),
        "{done}"
    );
    assert_eq!(done["name"], "users.csv");
    assert!(
        done["finished_at"].is_string() && done["started_at"].is_string(),
        "{done}"
    );

    let requests = receiver.collect(2000, Duration::from_secs(60)).await;
    assert_eq!(requests.len(), 2000);
    let mut seen = HashSet::new();
    for r in &requests {
        let envelope = r.json();
        let i: usize = envelope["data"]["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(envelope["data"], expected_row(i), "row {i}");
        assert_eq!(envelope["type"], "user.imported");
        assert!(seen.insert(i), "row {i} delivered twice");
    }
    // Rows start on line 2; row 7 spans two lines, so later rows start further down.
    assert!(
        requests
            .iter()
            .any(|r| r.header("webhook-id") == Some(format!("{id}_2").as_str()))
    );

    let (status, body) = upload(&app, "type=user.imported", "text/csv", csv).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"id": id, "duplicate": true}));
    assert_eq!(
        stream_messages(&app.nats, "HS_EVENTS").await,
        2000,
        "nothing sent for the repeat"
    );
    // Its object is gone once done; the repeat's chunks were never kept.
    assert_eq!(stream_messages(&app.nats, "OBJ_hs_uploads").await, 0);

    let (status, list) = app.get("/v1/uploads?tenant=default").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["uploads"].as_array().map(Vec::len), Some(1), "{list}");
    let (status, _) = app.get("/v1/uploads?tenant=other").await;
    assert_eq!(status, StatusCode::OK);
    let scrape = app.scrape().await;
    assert!(scrape.value("hookstream_file_lines_total", &[("outcome", "accepted")]) >= 2000.0);
    assert!(scrape.value("hookstream_files_total", &[("status", "done")]) >= 1.0);
}

#[tokio::test]
async fn ndjson_good_lines_are_delivered_and_bad_lines_listed_with_their_numbers() {
    let app = spawn_app_with(|_| {}).await;
    let receiver = Receiver::start().await;
    steps::create(
        &app,
        json!({"url": receiver.url("/hook"), "event_types": ["order.*"]}),
    )
    .await;
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(1_100_000));
    let lines = [
        r#"{"n":1}"#.to_string(),
        r#"{"type":"order.paid","data":{"n":2}}"#.into(),
        "".into(),
        r#"{"broken":"#.into(),
        r#"{"type":"bad type!","data":{}}"#.into(),
        big,
        r#"[3]"#.into(),
    ];
    let body = lines.join("\n");
    let (status, answer) = upload(&app, "type=order.created", "application/x-ndjson", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["id"].as_str().unwrap().to_string();
    let done = wait_finished(&app.client, &app.base_url(), &id).await;
    assert_eq!(
        (
            done["lines"].as_u64(),
            done["accepted"].as_u64(),
            done["rejected"].as_u64()
        ),
        (Some(6), Some(3), Some(3)),
        "{done}"
    );

    let mut got: Vec<(String, Value)> = receiver
        .collect(3, Duration::from_secs(30))
        .await
        .iter()
        .map(|r| {
            let e = r.json();
            (e["type"].as_str().unwrap().to_string(), e["data"].clone())
        })
        .collect();
    got.sort_by_key(|(_, d)| d.to_string());
    assert_eq!(
        got,
        vec![
            ("order.created".to_string(), json!([3])),
            ("order.created".to_string(), json!({"n": 1})),
            ("order.paid".to_string(), json!({"n": 2})),
        ]
    );
    let (status, errors) = app.get(&format!("/v1/uploads/{id}/errors")).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<u64> = errors["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, vec![4, 5, 6], "{errors}");
    let reasons: Vec<&str> = errors["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].starts_with("invalid JSON"), "{reasons:?}");
    assert!(reasons[1].contains("event type"), "{reasons:?}");
    assert!(reasons[2].contains("size limit"), "{reasons:?}");
    assert_eq!(errors["truncated"], false);
}

#[tokio::test]
async fn multipart_upload_takes_the_file_field_and_its_format() {
    let app = spawn_app_with(|_| {}).await;
    let boundary = "XyZboundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nignored\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"people.csv\"\r\nContent-Type: text/csv\r\n\r\na,b\n1,2\n3,4\n\r\n--{boundary}--\r\n"
    );
    let (status, answer) = upload(
        &app,
        "type=person.added",
        &format!("multipart/form-data; boundary={boundary}"),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let done = wait_finished(&app.client, &app.base_url(), answer["id"].as_str().unwrap()).await;
    assert_eq!(
        (done["accepted"].as_u64(), done["name"].as_str()),
        (Some(2), Some("people.csv")),
        "{done}"
    );
}

#[tokio::test]
async fn bad_uploads_are_refused_and_leave_nothing_behind() {
    let app = spawn_app_with(|cfg| cfg.ingest.upload_max_bytes = 4096).await;
    let cases = [
        (
            "type=a.b",
            "application/json",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        ("type=a.b&format=xml", "text/csv", StatusCode::BAD_REQUEST),
        (
            "type=a.b&format=ndjson",
            "text/csv",
            StatusCode::BAD_REQUEST,
        ),
        ("type=not%20a%20type", "text/csv", StatusCode::BAD_REQUEST),
        ("", "text/csv", StatusCode::BAD_REQUEST),
        ("type=a.b&tenant=Bad", "text/csv", StatusCode::BAD_REQUEST),
        ("type=a.b&unknown=1", "text/csv", StatusCode::BAD_REQUEST),
    ];
    for (query, content_type, want) in cases {
        let (status, body) = upload(&app, query, content_type, "a\n1\n").await;
        assert_eq!(status, want, "{query} {content_type}: {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    // Declared too large: refused before a byte is stored.
    let (status, body) = upload(&app, "type=a.b", "text/csv", "v\n".repeat(4000)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    // Streamed without a length: refused part-way, its chunks purged.
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..64).map(|_| Ok("v\n".repeat(512))).collect();
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (status, body) = upload(&app, "type=a.b", "text/csv", streamed).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(
        stream_messages(&app.nats, "OBJ_hs_uploads").await,
        0,
        "no chunk left behind"
    );
    let (status, list) = app.get("/v1/uploads").await;
    assert_eq!(
        (status, list["uploads"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    let (status, _) = app
        .get("/v1/uploads/upl_00000000000000000000000000000000")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/v1/uploads/nope/errors").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn folder_env<'a>(dir: &'a Path, lease_ms: &'a str) -> Vec<(&'a str, String)> {
    vec![
        ("HOOKSTREAM_INGEST__FOLDER__PATH", dir.display().to_string()),
        ("HOOKSTREAM_INGEST__FOLDER__FORMAT", "csv".into()),
        (
            "HOOKSTREAM_INGEST__FOLDER__EVENT_TYPE",
            "user.imported".into(),
        ),
        ("HOOKSTREAM_INGEST__FOLDER__SETTLE_MS", "200".into()),
        ("HOOKSTREAM_INGEST__RESCAN_MS", "200".into()),
        ("HOOKSTREAM_INGEST__LEASE_MS", lease_ms.into()),
        ("HOOKSTREAM_INGEST__CHECKPOINT_LINES", "1000".into()),
        // 6,000 lines a second: the file takes seconds, so the kill lands mid-file.
        ("HOOKSTREAM_FLOW__TENANT_DEFAULT__PER_SECOND", "6000".into()),
        ("HOOKSTREAM_FLOW__TENANT_DEFAULT__BURST", "600".into()),
    ]
}

/// Writes a file the way producers should: under a `.part` name, then renamed.
fn drop_file(dir: &Path, name: &str, content: &str) {
    let part = dir.join(format!("{name}.part"));
    std::fs::write(&part, content).expect("write the file");
    std::fs::rename(&part, dir.join(name)).expect("rename the file");
}

async fn uploads_at(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let (status, list) = crate::common::app::send(client.get(format!("{base}/v1/uploads"))).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["uploads"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn folder_file_is_stored_exactly_once_through_a_sigkill_mid_file() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = folder_env(dir.path(), "2000");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let client = reqwest::Client::new();
    let mut first = ServiceProcess::spawn(&nats.url(), &env).await;
    drop_file(dir.path(), "users.csv", &users_csv(30_000));

    // Killed once some checkpoints are written, well before the end.
    let deadline = Instant::now() + DONE_TIMEOUT;
    let id = loop {
        let files = uploads_at(&client, &first.base_url()).await;
        if let Some(f) = files.first()
            && f["lines"].as_u64().unwrap_or(0) >= 3000
        {
            assert_eq!(
                f["status"], "processing",
                "the file finished before the kill: {f}"
            );
            break f["id"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no progress: {files:?}\n{}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    first.kill9();

    let second = ServiceProcess::spawn(&nats.url(), &env).await;
    let done = wait_finished(&client, &second.base_url(), &id).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["lines"].as_u64(), Some(30_000), "{done}");
    assert_eq!(
        done["accepted"].as_u64().unwrap() + done["duplicates"].as_u64().unwrap(),
        30_000,
        "{done}"
    );
    assert!(
        second.log().contains("took over a file"),
        "{}",
        second.log()
    );

    let ids = stored_event_ids(&nats).await;
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), 30_000, "exactly one event per row on HS_EVENTS");
    assert_eq!(distinct.len(), 30_000);
    assert!(
        dir.path().join("done/users.csv").is_file(),
        "the file moved to done/"
    );
    assert!(!dir.path().join("users.csv").exists());

    // The same content dropped again: straight to done/, nothing published.
    drop_file(dir.path(), "again.csv", &users_csv(30_000));
    let deadline = Instant::now() + DONE_TIMEOUT;
    while !dir.path().join("done/again.csv").is_file() {
        assert!(Instant::now() < deadline, "the repeat never moved to done/");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stream_messages(&nats, "HS_EVENTS").await, 30_000);
    assert!(
        second.log().contains("content already ingested"),
        "{}",
        second.log()
    );
}

#[tokio::test]
async fn two_replicas_watching_one_folder_store_each_row_once() {
    let nats = Arc::new(NatsServer::start().await);
    let dir = tempfile::tempdir().unwrap();
    let folder = |cfg: &mut hookstream::config::Config| {
        cfg.ingest.folder = Some(hookstream::config::FolderConfig {
            path: dir.path().to_path_buf(),
            tenant: "default".into(),
            event_type: None,
            type_column: Some("kind".into()),
            format: "csv".into(),
            settle: Duration::from_millis(100),
        });
        cfg.ingest.rescan = Duration::from_millis(100);
        cfg.ingest.checkpoint_lines = 500;
    };
    let a = spawn_app_on(&nats, folder).await;
    let b = spawn_app_on(&nats, folder).await;
    let mut expected = 0;
    for f in 0..4 {
        let mut csv = String::from("kind,n\n");
        for i in 0..3000 {
            csv.push_str(&format!("row.f{f},{i}\n"));
        }
        // One bad row per file: rejected, listed in rejected/.
        csv.push_str("bad kind!,x\n");
        expected += 3000;
        drop_file(dir.path(), &format!("file{f}.csv"), &csv);
    }
    let deadline = Instant::now() + DONE_TIMEOUT;
    while (0..4).any(|f| !dir.path().join(format!("done/file{f}.csv")).is_file()) {
        assert!(
            Instant::now() < deadline,
            "files not done: {:?}",
            uploads_at(&a.client, &a.base_url()).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids = stored_event_ids(&nats).await;
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (expected, expected));
    for f in 0..4 {
        let errors = std::fs::read_to_string(
            dir.path()
                .join(format!("rejected/file{f}.csv.errors.ndjson")),
        )
        .unwrap();
        let lines: Vec<Value> = errors
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{errors}");
        assert_eq!(lines[0]["line"], 3002);
        assert!(
            lines[0]["reason"]
                .as_str()
                .unwrap()
                .contains("invalid type"),
            "{errors}"
        );
    }
    let files = uploads_at(&b.client, &b.base_url()).await;
    assert_eq!(files.len(), 4);
    assert!(
        files
            .iter()
            .all(|f| f["status"] == "done" && f["source"] == "folder" && f["accepted"] == 3000),
        "{files:?}"
    );
}

#[tokio::test]
async fn a_missing_folder_stops_the_start_with_a_clear_message() {
    let nats = Arc::new(NatsServer::start().await);
    let mut cfg = hookstream::config::Config::defaults();
    cfg.nats.url = Some(nats.url());
    cfg.api.listen = "127.0.0.1:0".into();
    cfg.ingest.folder = Some(hookstream::config::FolderConfig {
        path: "/nonexistent/hookstream-inbox".into(),
        tenant: "default".into(),
        event_type: Some("a.b".into()),
        type_column: None,
        format: "csv".into(),
        settle: Duration::from_millis(100),
    });
    let err = match hookstream::app::App::build(cfg).await {
        Ok(_) => panic!("started with a missing folder"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("ingest.folder.path /nonexistent/hookstream-inbox"),
        "{err}"
    );
}

#[tokio::test]
async fn the_cli_uploads_a_file_and_follows_it_to_done() {
    let app = spawn_app_with(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.csv");
    std::fs::write(&path, users_csv(500)).unwrap();
    let run = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_hookstream"))
            .args(["upload", path.to_str().unwrap(), "--type", "user.imported"])
            .args(["--url", &app.base_url()])
            .env_remove("HOOKSTREAM_API_URL")
            .output()
    };
    let out = run().await.expect("run hookstream upload");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("done: 500 lines, 500 accepted, 0 rejected"),
        "{stdout}"
    );
    let again = run().await.expect("run hookstream upload again");
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.status.success() && stdout.contains("not ingested again"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_tenant_key_neither_sees_nor_uploads_for_another_tenant() {
    use crate::common::keys::{make_key, spawn_keyed_app};
    let app = spawn_keyed_app().await;
    let (_, acme) = make_key(&app, "acme", "tenant").await;
    let (_, other) = make_key(&app, "other", "tenant").await;
    let (_, ingest) = make_key(&app, "acme", "ingest").await;
    let post = |key: String, query: &'static str| {
        let request = app
            .client
            .post(format!("{}/v1/uploads?{query}", app.base_url()))
            .bearer_auth(key)
            .header("content-type", "text/csv")
            .body("a\n1\n2\n");
        crate::common::app::send(request)
    };
    let get = |key: String, path: String| {
        crate::common::app::send(
            app.client
                .get(format!("{}{path}", app.base_url()))
                .bearer_auth(key),
        )
    };
    let (status, body) = post(acme.clone(), "type=a.b").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let done = loop {
        let (_, b) = get(acme.clone(), format!("/v1/uploads/{id}")).await;
        if b["status"] == "done" {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["tenant"], "acme", "the key's tenant is the default");

    let (status, body) = post(acme.clone(), "type=a.b&tenant=other").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = post(ingest, "type=a.b").await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an ingest key may not upload"
    );
    for path in [
        format!("/v1/uploads/{id}"),
        format!("/v1/uploads/{id}/errors"),
    ] {
        let (status, body) = get(other.clone(), path.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (status, list) = get(other.clone(), "/v1/uploads".into()).await;
    assert_eq!(
        (status, list["uploads"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0)),
        "{list}"
    );
    let (status, _) = get(other.clone(), "/v1/uploads?tenant=acme".into()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The same content for another tenant is another file, not a duplicate of acme's.
    let (status, body) = post(other, "type=a.b").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_ne!(body["id"], id.as_str());
    let (status, list) = get(acme, "/v1/uploads".into()).await;
    assert_eq!(
        (status, list["uploads"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1)),
        "{list}"
    );
    // The same content for another tenant is another file, not a duplicate of acme's.
}
