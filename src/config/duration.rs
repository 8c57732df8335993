//! Durations in the configuration: written as integers under the `_ms` and `_secs` keys
//! users know (`delivery.shutdown_grace_ms = 10000`, `HOOKSTREAM_DELIVERY__SHUTDOWN_GRACE_MS`),
//! held as `Duration`, so they are converted here once and nowhere else.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// `#[serde(with = "duration::millis")]`: a `Duration` as whole milliseconds.
pub mod millis {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::whole_millis(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// `#[serde(with = "duration::secs")]`: a `Duration` as whole seconds.
pub mod secs {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Whole milliseconds, for the places that store a configured default in a record that
/// holds milliseconds (a destination's `timeout_ms`, its retry policy).
pub fn whole_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
