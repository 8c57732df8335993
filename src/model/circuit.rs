//! A destination's circuit breaker as the API shows it (the logic is in `flow/circuit.rs`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Closed,
    Open,
    HalfOpen,
}

impl Phase {
    /// The value of the `hookstream_circuit_state` gauge.
    pub fn gauge(self) -> f64 {
        match self {
            Phase::Closed => 0.0,
            Phase::HalfOpen => 1.0,
            Phase::Open => 2.0,
        }
    }
}

/// A destination's circuit as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CircuitView {
    pub state: Phase,
    /// Consecutive failed attempts.
    pub failures: u32,
    pub opened_at: Option<DateTime<Utc>>,
    /// When the cool-down ends (half-open from then on).
    pub until: Option<DateTime<Utc>>,
}
