//! Files in (docs/adr/0011): a CSV of `lines` rows uploaded, timed until every line's
//! event is stored, against the pipelined JetStream publish rate of the same nats-server
//! in the same run; the service's peak RSS; the delivery of those events to one
//! destination; and a 1 GiB upload whose RSS must stay bounded (asserted).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::harness::{Nats, Receiver, Service, proc_stats};

/// The peak RSS a 1 GiB upload may reach: far below the file (it is streamed).
const GIB_UPLOAD_RSS_LIMIT: u64 = 256 << 20;
const PUBLISH_WINDOW: usize = 2048;

/// Row `i` of the CSV: about 60 bytes, like a user export.
fn row(i: usize, pad: usize) -> String {
    format!("{i},user{i}@example.com,Name {i},{}\n", "p".repeat(pad))
}

/// The CSV generated as it is sent: header, then rows of `pad` padding each.
fn csv_body(lines: usize, pad: usize) -> reqwest::Body {
    const ROWS_PER_CHUNK: usize = 2000;
    let header = futures::stream::once(async {
        Ok::<_, std::io::Error>(String::from("id,email,name,pad\n"))
    });
    let rows = futures::stream::iter((0..lines).step_by(ROWS_PER_CHUNK)).map(move |start| {
        let end = (start + ROWS_PER_CHUNK).min(lines);
        let mut chunk = String::with_capacity((end - start) * (50 + pad));
        for i in start..end {
            chunk.push_str(&row(i, pad));
        }
        Ok(chunk)
    });
    reqwest::Body::wrap_stream(header.chain(rows))
}

/// What the pipeline sends per line, published straight to JetStream with
/// `PUBLISH_WINDOW` acks in flight and a `Nats-Msg-Id` each: the ceiling.
async fn publish_rate(nats: &Nats, total: usize) -> f64 {
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "RAW_FILES".into(),
        subjects: vec!["rawfiles.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    let envelope = serde_json::to_vec(&json!({
        "id": "upl_0123456789abcdef0123456789abcdef_1000000", "tenant": "default",
        "type": "user.imported", "source": null, "occurred_at": null,
        "received_at": "2026-01-01T00:00:00.000000000Z",
        "data": {"id": "1000000", "email": "user1000000@example.com", "name": "Name 1000000", "pad": "pppppppppp"},
    }))
    .expect("json");
    let payload = bytes::Bytes::from(envelope);
    let started = Instant::now();
    let mut acks = futures::stream::FuturesUnordered::new();
    for i in 0..total {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("raw_{i}").as_str());
        headers.insert("Hs-Event-Type", "user.imported");
        headers.insert("Hs-Tenant", "default");
        acks.push(
            js.publish_with_headers(format!("rawfiles.{}", i % 16), headers, payload.clone())
                .await
                .expect("publish")
                .into_future(),
        );
        if acks.len() >= PUBLISH_WINDOW {
            acks.next().await.expect("ack").expect("acked");
        }
    }
    while let Some(a) = acks.next().await {
        a.expect("acked");
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let _ = js.delete_stream("RAW_FILES").await;
    rate
}

/// Samples a process's RSS until stopped; the peak.
struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssPeak {
    fn watch(pid: u32) -> RssPeak {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(proc_stats(pid).0, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        RssPeak { peak, stop }
    }

    fn peak_mib(&self) -> f64 {
        self.peak.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
    }

    fn reset(&self) {
        self.peak.store(0, Ordering::Relaxed);
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn post_json(client: &reqwest::Client, url: String, body: Value) -> Value {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    r.json().await.unwrap_or(Value::Null)
}

/// Uploads a generated CSV; the seconds until stored (202) and until done.
async fn upload(
    client: &reqwest::Client,
    base: &str,
    lines: usize,
    pad: usize,
) -> (f64, f64, Value) {
    let started = Instant::now();
    let answer: Value = client
        .post(format!(
            "{base}/v1/uploads?type=user.imported&name=bench.csv"
        ))
        .header("content-type", "text/csv")
        .body(csv_body(lines, pad))
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("upload answer");
    let stored = started.elapsed().as_secs_f64();
    let id = answer["id"]
        .as_str()
        .unwrap_or_else(|| panic!("upload refused: {answer}"))
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        let status: Value = client
            .get(format!("{base}/v1/uploads/{id}"))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("status json");
        if matches!(status["status"].as_str(), Some("done" | "failed")) {
            return (stored, started.elapsed().as_secs_f64(), status);
        }
        assert!(Instant::now() < deadline, "upload {id} not done: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn files(lines: usize) -> Value {
    let nats = Nats::start();
    let publish = publish_rate(&nats, lines.min(300_000)).await;
    let receiver = Receiver::start().await;
    // The destination is paused while the whole file goes in: without the per-destination
    // backlog limit (ADR 0015, default 100,000), past which its deliveries would be
    // dead-lettered and the delivery figure would wait for lines that never come.
    let service = Service::start(
        &nats.url(),
        "serve",
        &[(
            "HOOKSTREAM_EVENTS__DELIVERY_MAX_PER_DESTINATION",
            "0".to_string(),
        )],
    )
    .await;
    let client = reqwest::Client::new();
    let base = service.base();
    // Paused while the file goes in: ingest is measured alone, delivery after it.
    let dest = post_json(
        &client,
        format!("{base}/v1/destinations"),
        json!({"url": receiver.url("ok", 0), "event_types": ["user.imported"], "max_in_flight": 64}),
    )
    .await;
    let dest_id = dest["id"].as_str().expect("destination id").to_string();
    post_json(
        &client,
        format!("{base}/v1/destinations/{dest_id}/pause"),
        json!({}),
    )
    .await;

    let rss = RssPeak::watch(service.pid());
    let (stored_s, done_s, status) = upload(&client, &base, lines, 10).await;
    let ingest_peak = rss.peak_mib();
    assert_eq!(status["accepted"].as_u64(), Some(lines as u64), "{status}");
    let lines_per_second = lines as f64 / done_s;

    post_json(
        &client,
        format!("{base}/v1/destinations/{dest_id}/resume"),
        json!({}),
    )
    .await;
    let started = Instant::now();
    let delivered = receiver
        .wait_for(lines as u64, Duration::from_secs(900))
        .await;
    let delivery = delivered.map(|t| lines as f64 / t.duration_since(started).as_secs_f64());

    // 1 GiB of 4 KiB rows: stored, then ingested, RSS bounded all along.
    rss.reset();
    let pad = 4000;
    let gib_lines = (1usize << 30) / (50 + pad);
    let (gib_stored_s, gib_done_s, gib_status) = upload(&client, &base, gib_lines, pad).await;
    let gib_peak = rss.peak_mib();
    assert!(
        gib_peak < (GIB_UPLOAD_RSS_LIMIT >> 20) as f64,
        "a 1 GiB upload took the service to {gib_peak:.0} MiB RSS"
    );
    json!({
        "lines": lines,
        "jetstream_publish_per_second": publish,
        "upload_stored_s": stored_s,
        "upload_done_s": done_s,
        "lines_per_second": lines_per_second,
        "ratio_to_publish": lines_per_second / publish,
        "peak_rss_mib": ingest_peak,
        "delivery_per_second": delivery,
        "gib_upload": {
            "lines": gib_lines,
            "stored_s": gib_stored_s,
            "done_s": gib_done_s,
            "lines_per_second": gib_lines as f64 / gib_done_s,
            "peak_rss_mib": gib_peak,
            "rss_limit_mib": GIB_UPLOAD_RSS_LIMIT >> 20,
            "status": gib_status["status"],
        },
    })
}
