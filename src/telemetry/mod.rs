//! Logs and metrics. Metric names live in `metrics.rs` only.

pub mod logs;
pub mod metrics;
