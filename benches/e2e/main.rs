//! `make bench`: hookstream against the limits of this machine, measured in one run.
//!
//! Every scenario starts its own nats-server, the hookstream release binary (as a
//! process, so its CPU and memory are its own) and a fast receiver, all on 127.0.0.1.
//! Prints a table and writes `target/bench-results.json`. `BENCH_SCALE=2` doubles the
//! event counts; `BENCH_ONLY=name,name` runs a subset.

mod access;
mod broker;
mod console;
mod files;
mod harness;
mod routing;
mod scenarios;

use std::time::Instant;

use serde_json::{Value, json};

// The same allocator as the service, so the reference client and the receiver are not
// slowed by glibc's malloc where hookstream is not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    let started = Instant::now();
    let mut results: Vec<(String, Value)> = Vec::new();

    macro_rules! run {
        ($name:expr, $f:expr) => {
            if wanted($name) {
                eprintln!("== {} …", $name);
                let value: Value = $f.await;
                eprintln!("   {}", value);
                results.push(($name.to_string(), value));
            }
        };
    }

    let n = |base: usize| ((base as f64) * scale).max(1.0) as usize;
    run!("raw_http", scenarios::raw_http(n(40_000), 64));
    // At ingest_c32's concurrency: what the same client and receiver do at 32 in flight.
    run!("raw_http_c32", scenarios::raw_http(n(40_000), 32));
    run!("raw_jetstream", scenarios::raw_jetstream(n(100_000)));
    run!("raw_fanout_1000_1f", broker::raw_fanout(1000, n(20_000), 1));
    run!("raw_fanout_1000_2f", broker::raw_fanout(1000, n(20_000), 2));
    for shards in [1, 4, 16, 32] {
        run!(
            &format!("shard_fanout_1000_{shards}s"),
            broker::shard_fanout(1000, shards, n(20_000))
        );
    }
    // Acks beside 10,000 consumers are slow enough that 2,000 of them tell the cost.
    for (idle, events) in [(0, 20_000), (100, 20_000), (1000, 20_000), (10_000, 2_000)] {
        run!(
            &format!("ack_cost_{idle}"),
            broker::ack_cost(idle, n(events))
        );
    }
    // Levers for the routed layout's copy (docs/PERFORMANCE.md), broker alone.
    {
        use broker::levers::{self, Write};
        let shard = [
            Write::PubAcked,
            Write::FastBatch(100),
            Write::FastBatch(1_000),
            Write::FastBatch(10_000),
            Write::Core,
        ];
        for how in shard {
            run!(
                &format!("lever_shard_{}", how.label()),
                levers::shard_publish(how, n(20_000))
            );
        }
        run!("lever_fast_batch_checks", broker::fast_batch::checks());
        run!(
            "lever_router_ack_explicit",
            levers::router_acks(false, n(20_000))
        );
        run!("lever_router_ack_all", levers::router_acks(true, n(20_000)));
        for how in [Write::PubAcked, Write::FastBatch(1_000), Write::Core] {
            run!(
                &format!("lever_kv_{}", how.label()),
                levers::kv_record(how, n(20_000))
            );
        }
    }
    // The broker's floor per delivery (docs/PERFORMANCE.md), broker alone.
    {
        use broker::floor::{self, Layout};
        for layout in [
            Layout::Old,
            Layout::Routed { record: false },
            Layout::Routed { record: true },
        ] {
            run!(
                &format!("floor_delivery_{}", layout.label()),
                floor::delivery_floor(layout, n(20_000))
            );
        }
    }
    for lean in [false, true] {
        run!(
            if lean {
                "floor_ingest_c32_lean"
            } else {
                "floor_ingest_c32"
            },
            broker::floor::ingest_floor(n(20_000), 32, lean)
        );
    }
    run!("ingest", scenarios::ingest(n(20_000)));
    run!("ingest_c32", scenarios::ingest_single(n(20_000), 32));
    for (fanout, events) in [(1, 20_000), (10, 10_000), (100, 2_000)] {
        run!(
            &format!("route_fanout_{fanout}"),
            routing::route(fanout, n(events))
        );
    }
    run!(
        "ingest_keyed",
        access::ingest_with_and_without_key(n(40_000))
    );
    run!("files", files::files(n(1_000_000)));
    run!("console", console::console(10_000, n(1_000_000)));
    // The old layout runs only when its binary is given (HOOKSTREAM_BENCH_OLD_BIN).
    let old = std::env::var_os("HOOKSTREAM_BENCH_OLD_BIN").is_some();
    for mode in ["routed", "old"] {
        if mode == "old" && !old {
            continue;
        }
        for (dests, events) in [(1, 20_000), (100, 20_000), (1000, 20_000), (10_000, 20_000)] {
            run!(
                &format!("drain_{dests}_{mode}"),
                scenarios::drain(dests, n(events), mode, false)
            );
            // Destinations whose consumers exist (busy just before); the old layout's
            // consumers always exist, so only the routed layout has both.
            if mode == "routed" && dests >= 1000 {
                run!(
                    &format!("drain_{dests}_{mode}_warm"),
                    scenarios::drain(dests, n(events), mode, true)
                );
            }
        }
        if mode == "routed" {
            // 1 event → 100 destinations: 200 events, 20,000 deliveries like the drains.
            run!("drain_fanout_100", scenarios::drain_fanout(100, n(200)));
        }
        run!(&format!("idle_10000_{mode}"), scenarios::idle(10_000, mode));
        run!(
            &format!("latency_10_{mode}"),
            scenarios::latency(10, 1000, n(10_000), mode)
        );
        run!(
            &format!("latency_1000_{mode}"),
            scenarios::latency(1000, 1000, n(10_000), mode)
        );
        if mode == "routed" {
            run!("failure_mix", scenarios::failure_mix(n(100_000)));
        }
    }

    let summary = scenarios::summarise(&results);
    println!("{summary}");
    let out = json!({
        "scale": scale,
        "seconds": started.elapsed().as_secs_f64(),
        "results": results.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<serde_json::Map<_, _>>(),
    });
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&out).unwrap_or_default(),
    )
    .ok();
    eprintln!(
        "results in {} ({:.0} s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
}
