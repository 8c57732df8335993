//! The live throughput chart: delivered and failed attempts per second, as an SVG.
//!
//! Each request of the chart (the page's script asks every 2 s) samples this process's
//! `hookstream_deliveries_total` counters from its metrics recorder into the
//! [`Samples`](crate::telemetry::throughput::Samples) the API state keeps; the chart
//! plots the rate between consecutive samples. It shows the deliveries of the replica
//! that serves the console (all of them under `serve`).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::session::Viewer;
use crate::api::AppState;
use crate::telemetry::metrics as m;

use crate::telemetry::throughput::KEPT;

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 120.0;

/// `(delivered, failed)` totals of this process: failed counts retried and
/// dead-lettered attempts.
fn totals(text: &str) -> (f64, f64) {
    let mut delivered = 0.0;
    let mut failed = 0.0;
    for line in text.lines().filter(|l| l.starts_with(m::DELIVERIES)) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if labels.contains("outcome=\"delivered\"") {
            delivered += value;
        } else {
            failed += value;
        }
    }
    (delivered, failed)
}

fn polyline(rates: &[f64], max: f64) -> String {
    let step = WIDTH / (KEPT - 1) as f64;
    let offset = WIDTH - step * rates.len().saturating_sub(1) as f64;
    rates
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "{:.1},{:.1}",
                offset + step * i as f64,
                HEIGHT - 14.0 - (r / max) * (HEIGHT - 28.0)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn chart(_viewer: Viewer, State(state): State<AppState>) -> Response {
    let (delivered, failed) = totals(&state.metrics.render());
    let rates = state.console.sample(delivered, failed);
    let d: Vec<f64> = rates.iter().map(|r| r.0).collect();
    let f: Vec<f64> = rates.iter().map(|r| r.1).collect();
    let max = d.iter().chain(&f).fold(1.0f64, |a, b| a.max(*b));
    let now = (
        d.last().copied().unwrap_or(0.0),
        f.last().copied().unwrap_or(0.0),
    );
    let svg = html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(WIDTH) height=(HEIGHT)
            viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } font-family="sans-serif" font-size="11" {
            rect width=(WIDTH) height=(HEIGHT) fill="#fff" {}
            text x="4" y="12" fill="#1a7f37" { "delivered " (format!("{:.1}", now.0)) "/s" }
            text x="140" y="12" fill="#cf222e" { "failed " (format!("{:.1}", now.1)) "/s" }
            text x=(WIDTH - 4.0) y="12" text-anchor="end" fill="#57606a" { "max " (format!("{max:.0}")) "/s" }
            polyline points=(polyline(&d, max)) fill="none" stroke="#1a7f37" stroke-width="2" {}
            polyline points=(polyline(&f, max)) fill="none" stroke="#cf222e" stroke-width="2" {}
        }
    };
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg.into_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_outcomes_across_destinations() {
        let text = "\
# TYPE hookstream_deliveries_total counter
hookstream_deliveries_total{outcome=\"delivered\",destination=\"a\"} 5
hookstream_deliveries_total{outcome=\"delivered\",destination=\"b\"} 2
hookstream_deliveries_total{outcome=\"failed\",destination=\"a\"} 3
hookstream_deliveries_total{outcome=\"dead_lettered\",destination=\"a\"} 1
hookstream_other_total 9
";
        assert_eq!(totals(text), (7.0, 4.0));
    }
}
