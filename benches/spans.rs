//! What tracing costs on the delivery hot path, per attempt: the `process` and `POST`
//! spans with their attributes, the `traceparent` sent, the results recorded. Off (no
//! `OTEL_*`) and on (a batch exporter aimed at a port where nothing listens; spans are
//! queued and exported on the SDK's own thread, as in production).
//!
//! `cargo bench --bench spans` (release build), or `cargo test --bench spans` to reuse the
//! debug build (dependencies are optimised there too); a few seconds either way.

use std::hint::black_box;
use std::time::{Duration, Instant};

use hookstream::config::LogFormat;
use hookstream::telemetry::{logs, propagation, spans};

const ATTEMPTS: u32 = 20_000;

fn one_attempt(n: u32) -> Option<String> {
    let process = spans::process("dst_01BENCH", "hs.ev.default.order.created", None, 1);
    let _entered = process.enter();
    spans::record_event_id(&process, "evt_01BENCH");
    let attempt = spans::attempt("POST", "evt_01BENCH", "dst_01BENCH", n);
    let traceparent = propagation::traceparent_of(&attempt);
    spans::record_attempt_url(&attempt, "https://hooks.example.com/in?token=x");
    spans::record_attempt_result(&attempt, Some(200), None);
    spans::record_outcome(&process, "delivered", None);
    traceparent
}

fn per_attempt() -> Duration {
    for n in 0..1_000 {
        black_box(one_attempt(n));
    }
    let started = Instant::now();
    for n in 0..ATTEMPTS {
        black_box(one_attempt(n));
    }
    started.elapsed() / ATTEMPTS
}

#[tokio::main]
async fn main() {
    let off = per_attempt();
    // SAFETY: single-threaded at this point of main; nothing else reads the environment.
    unsafe {
        std::env::set_var("RUST_LOG", "off");
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9");
        std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
        std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "600000");
        std::env::set_var("OTEL_BSP_MAX_QUEUE_SIZE", "100000");
    }
    let telemetry = logs::init(LogFormat::Json).expect("telemetry");
    let on = per_attempt();
    println!("per attempt, traces off: {off:?}");
    println!("per attempt, traces on:  {on:?} (process + attempt span, traceparent)");
    drop(telemetry);
}
