//! The last two minutes of this process's delivered and failed totals, sampled by the
//! console's throughput chart (`console/throughput.rs` draws them). Kept in the API's
//! state, so it lives here rather than in the console, which builds on the API.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

/// Samples kept (about two minutes at one every two seconds).
pub const KEPT: usize = 60;

/// `(when, delivered total, failed total)` samples.
#[derive(Default)]
pub struct Samples {
    kept: Mutex<VecDeque<(Instant, f64, f64)>>,
}

impl Samples {
    /// Adds a sample of the totals and returns the rates `(delivered/s, failed/s)`
    /// between consecutive samples, oldest first.
    pub fn sample(&self, delivered: f64, failed: f64) -> Vec<(f64, f64)> {
        let mut kept = self.kept.lock().expect("samples lock is never poisoned");
        let now = Instant::now();
        // Two requests in the same instant (two tabs) would divide by zero.
        if kept
            .back()
            .is_none_or(|(t, _, _)| now.duration_since(*t).as_millis() >= 200)
        {
            kept.push_back((now, delivered, failed));
        }
        while kept.len() > KEPT {
            kept.pop_front();
        }
        kept.iter()
            .zip(kept.iter().skip(1))
            .map(|((t0, d0, f0), (t1, d1, f1))| {
                let secs = t1.duration_since(*t0).as_secs_f64().max(0.001);
                (((d1 - d0) / secs).max(0.0), ((f1 - f0) / secs).max(0.0))
            })
            .collect()
    }
}
