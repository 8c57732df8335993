//! The checks a configuration passes before anything starts: every refusal names its
//! key and why (`ConfigError::Invalid`), so a bad value stops the start with a message
//! instead of surfacing later as a broker or HTTP error.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Config, ConfigError, invalid};

/// More runtime threads than this is a typo, not a tuning.
const MAX_WORKER_THREADS: usize = 1024;

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_subject_token(&self.subject_prefix) {
            return Err(invalid(
                "subject_prefix",
                "must be one subject token of [A-Za-z0-9_-]",
            ));
        }
        if self.api.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "api.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080",
                    self.api.listen
                ),
            ));
        }
        if self.runtime.worker_threads > MAX_WORKER_THREADS {
            return Err(invalid(
                "runtime.worker_threads",
                format!("at most {MAX_WORKER_THREADS} (0 = one per CPU)"),
            ));
        }
        let f = &self.flow;
        if f.circuit_failure_threshold == 0 || f.circuit_probes == 0 {
            return Err(invalid(
                "flow.circuit_failure_threshold",
                "circuit_failure_threshold and circuit_probes must be at least 1",
            ));
        }
        if f.circuit_cooldown.is_zero() || f.rate_lease_max == 0 {
            return Err(invalid(
                "flow.circuit_cooldown_ms",
                "circuit_cooldown_ms and rate_lease_max must be positive",
            ));
        }
        for (tenant, l) in std::iter::once(("tenant_default", &f.tenant_default))
            .chain(f.tenants.iter().map(|(t, l)| (t.as_str(), l)))
        {
            if !(l.per_second >= 0.0 && l.per_second.is_finite())
                || (l.per_second > 0.0 && l.burst == 0)
            {
                return Err(invalid(
                    "flow.tenants",
                    format!(
                        "{tenant}: per_second must be 0 (unlimited) or positive, with a burst of at least 1"
                    ),
                ));
            }
        }
        if !matches!(self.nats.replicas, 1 | 3 | 5) {
            return Err(invalid(
                "nats.replicas",
                "must be 1, 3 or 5: an even count tolerates no more lost servers than the odd count below it",
            ));
        }
        if self.nats.password.is_some() != self.nats.user.is_some() {
            return Err(invalid(
                "nats.password",
                "nats.user and nats.password go together",
            ));
        }
        if self.nats.user.is_some() && self.nats.credentials_file.is_some() {
            return Err(invalid(
                "nats.credentials_file",
                "use either a credentials file or nats.user and nats.password",
            ));
        }
        if !is_subject_token(&self.nats.inbox_prefix) {
            return Err(invalid(
                "nats.inbox_prefix",
                "must be one subject token of [A-Za-z0-9_-]",
            ));
        }
        // Routing (docs/adr/0010).
        if self.events.delivery_max_per_destination < 0 {
            return Err(invalid(
                "events.delivery_max_per_destination",
                "must be 0 (no limit) or more",
            ));
        }
        if !(1..=1024).contains(&self.events.delivery_shards) {
            return Err(invalid("events.delivery_shards", "must be 1 to 1024"));
        }
        if self.events.delivery_max_bytes <= 0 {
            return Err(invalid(
                "events.delivery_max_bytes",
                "must be positive: a shard without a bound could fill the disk",
            ));
        }
        if self.delivery.consumer_idle.is_zero() {
            return Err(invalid("delivery.consumer_idle_secs", "must be at least 1"));
        }
        if self.events.max_consumers <= 0 {
            return Err(invalid(
                "events.max_consumers",
                "must be positive (nats-server replaces -1 with its own 1,000)",
            ));
        }
        if !(1..=10_000).contains(&self.events.max_batch) {
            return Err(invalid("events.max_batch", "must be 1 to 10000"));
        }
        if self.api.body_limit_bytes < 1024 {
            return Err(invalid("api.body_limit_bytes", "must be at least 1024"));
        }
        let d = &self.delivery;
        if d.default_max_in_flight == 0 || d.default_max_attempts == 0 {
            return Err(invalid(
                "delivery.default_max_in_flight",
                "in-flight and attempts must be at least 1",
            ));
        }
        if d.default_timeout.is_zero() {
            return Err(invalid("delivery.default_timeout_ms", "must be positive"));
        }
        if d.default_backoff_factor < 1.0 || !(0.0..=1.0).contains(&d.default_backoff_jitter) {
            return Err(invalid(
                "delivery.default_backoff_factor",
                "factor must be ≥ 1 and jitter between 0 and 1",
            ));
        }
        if d.ack_wait_margin < Duration::from_secs(1) {
            return Err(invalid(
                "delivery.ack_wait_margin_ms",
                "must be at least 1000: the ack wait must exceed the request timeout with room to record the attempt",
            ));
        }
        if !(1..=10_000).contains(&d.pull_batch) || d.max_in_flight_total == 0 {
            return Err(invalid(
                "delivery.pull_batch",
                "pull_batch must be 1 to 10000 and max_in_flight_total positive",
            ));
        }
        if d.sweep_interval < Duration::from_millis(100) {
            return Err(invalid(
                "delivery.sweep_interval_ms",
                "must be at least 100",
            ));
        }
        if self.idempotency.ttl.is_zero() {
            return Err(invalid("idempotency.ttl_secs", "must be positive"));
        }
        self.validate_ingest()?;
        for entry in &self.security.ssrf_allowlist {
            if entry.trim().is_empty() {
                return Err(invalid(
                    "security.ssrf_allowlist",
                    "contains an empty entry",
                ));
            }
        }
        Ok(())
    }

    fn validate_ingest(&self) -> Result<(), ConfigError> {
        let i = &self.ingest;
        if i.upload_max_bytes == 0 || i.upload_timeout.is_zero() {
            return Err(invalid(
                "ingest.upload_max_bytes",
                "upload_max_bytes and upload_timeout_ms must be positive",
            ));
        }
        if !(1..=65_536).contains(&i.publish_window) || i.checkpoint_lines == 0 {
            return Err(invalid(
                "ingest.publish_window",
                "publish_window must be 1 to 65536 and checkpoint_lines positive",
            ));
        }
        if i.lease < Duration::from_secs(1) || i.rescan.is_zero() || i.rescan > i.lease {
            return Err(invalid(
                "ingest.lease_ms",
                "lease_ms must be at least 1000 and rescan_ms between 1 and lease_ms",
            ));
        }
        if i.max_files == 0 || i.files_retention.is_zero() {
            return Err(invalid(
                "ingest.max_files",
                "max_files and files_retention_secs must be positive",
            ));
        }
        let Some(f) = &i.folder else {
            return Ok(());
        };
        if crate::model::TenantId::parse(f.tenant.clone()).is_err() {
            return Err(invalid(
                "ingest.folder.tenant",
                "1 to 64 characters of [a-z0-9_-]",
            ));
        }
        if !matches!(f.format.as_str(), "csv" | "ndjson") {
            return Err(invalid(
                "ingest.folder.format",
                format!("{:?} is not csv or ndjson", f.format),
            ));
        }
        match (&f.event_type, &f.type_column) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "ingest.folder.event_type",
                    "set event_type or type_column, not both",
                ));
            }
            (None, None) if f.format == "csv" => {
                return Err(invalid(
                    "ingest.folder.event_type",
                    "a csv folder needs event_type or type_column",
                ));
            }
            (_, Some(_)) if f.format != "csv" => {
                return Err(invalid(
                    "ingest.folder.type_column",
                    "type_column is for csv; an ndjson line names its type itself",
                ));
            }
            (Some(t), None) if crate::model::EventType::parse(t.clone()).is_err() => {
                return Err(invalid(
                    "ingest.folder.event_type",
                    "dot-separated tokens of [A-Za-z0-9_-]",
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

fn is_subject_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
