//! Configuration: embedded defaults (`default.toml`, each key commented) ← optional TOML
//! file ← `HOOKSTREAM_*` environment. Unknown keys are errors; `validate()` names the bad
//! key and why, and checks the combinations that only fail later at run time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

const DEFAULTS: &str = include_str!("default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration key `{key}` is invalid: {why}")]
    Invalid { key: &'static str, why: String },
}

fn invalid(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        why: why.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub subject_prefix: String,
    pub nats: NatsConfig,
    pub api: ApiConfig,
    pub events: EventsConfig,
    pub attempts: RetentionConfig,
    pub dlq: RetentionConfig,
    pub idempotency: IdempotencyConfig,
    pub delivery: DeliveryConfig,
    pub flow: FlowConfig,
    pub security: SecurityConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    pub ingest: IngestConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    pub url: Option<String>,
    pub credentials_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<Password>,
    pub inbox_prefix: String,
    pub replicas: usize,
    pub request_timeout_ms: u64,
    pub embedded: EmbeddedConfig,
}

/// The NATS password: `Debug` prints `[redacted]`, so logging the config never leaks it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {
    pub binary: Option<PathBuf>,
    pub port: u16,
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: String,
    pub body_limit_bytes: usize,
    pub request_timeout_ms: u64,
    pub retry_after_secs: u64,
    pub auth: AuthConfig,
}

/// Who may use the API (`[api.auth]`, `src/access/`, docs/adr/0009).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Admin keys: the key itself, or `sha256:<64 hex>` (its SHA-256), so a file need not
    /// hold the key. Env `HOOKSTREAM_ADMIN_API_KEYS` (commas). `Debug` prints none.
    pub admin_keys: AdminKeys,
    /// `/metrics` needs an admin key too.
    pub protect_metrics: bool,
}

/// `keys`: every `/v1` request needs a key; with no admin key configured the API is open
/// on a loopback address only (one warning) and refuses to start on any other.
/// `off`: open to anyone who can reach it, wherever it listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    Keys,
    Off,
}

/// The configured admin keys; never printed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AdminKeys(pub Vec<String>);

impl std::fmt::Debug for AdminKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} admin keys redacted]", self.0.len())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    pub max_age_secs: u64,
    pub max_bytes: i64,
    pub duplicate_window_secs: u64,
    pub max_consumers: i32,
    pub max_batch: usize,
    // Routing (docs/adr/0010).
    pub delivery_shards: u32,
    pub delivery_max_bytes: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub max_age_secs: u64,
    pub max_bytes: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    pub default_timeout_ms: u64,
    pub default_max_in_flight: u32,
    pub default_max_attempts: u32,
    pub default_backoff_base_ms: u64,
    pub default_backoff_factor: f64,
    pub default_backoff_max_ms: u64,
    pub default_backoff_jitter: f64,
    pub retry_after_cap_ms: u64,
    pub pull_batch: usize,
    pub sweep_interval_ms: u64,
    pub ack_wait_margin_ms: u64,
    pub max_in_flight_total: usize,
    pub slow_delivery_ms: u64,
    pub shutdown_grace_ms: u64,
    pub stats_flush_ms: u64,
    // Routing (docs/adr/0010).
    pub consumer_idle_secs: u64,
    // Operational events (docs/adr/0013): 0 = never disable for failing.
    pub disable_after_secs: u64,
}

/// Circuit breakers, shared rate limits, tenant ingest limits (`src/flow/`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    pub circuit_failure_threshold: u32,
    pub circuit_cooldown_ms: u64,
    pub circuit_probes: u32,
    pub rate_lease_horizon_ms: u64,
    pub rate_lease_max: u32,
    pub tenant_default: TenantLimit,
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, TenantLimit>,
    // Operational events (docs/adr/0013).
    pub circuit_announce_interval_ms: u64,
}

/// Events per second a tenant may ingest, all API replicas together; 0 = unlimited.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimit {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    pub allow_private_networks: bool,
    pub ssrf_allowlist: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// Metrics and traces; traces themselves are configured by the standard `OTEL_*`
/// variables only (`telemetry/traces.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    pub per_destination_metrics: bool,
    pub per_destination_metrics_limit: usize,
}

/// Files: uploads and the watched folder (`src/files/`, docs/adr/0011).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub upload_max_bytes: u64,
    pub upload_timeout_ms: u64,
    pub publish_window: usize,
    pub checkpoint_lines: u64,
    pub lease_ms: u64,
    pub rescan_ms: u64,
    pub max_files: usize,
    pub errors_kept: usize,
    pub files_retention_secs: u64,
    pub folder: Option<FolderConfig>,
}

/// `[ingest.folder]`: a folder whose new files become events, one per line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderConfig {
    pub path: PathBuf,
    #[serde(default = "default_tenant")]
    pub tenant: String,
    pub event_type: Option<String>,
    pub type_column: Option<String>,
    pub format: String,
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
}

fn default_tenant() -> String {
    "default".into()
}

fn default_settle_ms() -> u64 {
    2000
}

impl TelemetryConfig {
    /// How many destinations get their own `destination` label (0: none).
    pub fn destination_label_limit(&self) -> usize {
        if self.per_destination_metrics {
            self.per_destination_metrics_limit
        } else {
            0
        }
    }
}

impl Config {
    /// The embedded defaults alone: no file, no environment (what tests start from).
    pub fn defaults() -> Self {
        Figment::from(Toml::string(DEFAULTS))
            .extract()
            .expect("the embedded default.toml is valid; a unit test checks it")
    }

    /// Defaults ← `file` (or `HOOKSTREAM_CONFIG`) ← environment, then validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("HOOKSTREAM_CONFIG").map(PathBuf::from));
        if let Some(file) = file {
            if !file.exists() {
                return Err(invalid(
                    "HOOKSTREAM_CONFIG",
                    format!("{} does not exist", file.display()),
                ));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Self::env());
        figment = figment.merge(Serialized::defaults(Self::contract_env()?));
        let cfg: Config = figment.extract().map_err(Box::new)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// `HOOKSTREAM_SECTION__KEY` for every key, and `HOOKSTREAM_SUBJECT_PREFIX`. Other
    /// `HOOKSTREAM_*` names (the contract's short names, handled in `contract_env`, and
    /// tool variables such as `HOOKSTREAM_NATS_SERVER_BIN`) are not config keys.
    fn env() -> Env {
        Env::prefixed("HOOKSTREAM_")
            .filter(|k| {
                k.as_str().contains("__") || k.as_str().eq_ignore_ascii_case("subject_prefix")
            })
            .map(|k| k.as_str().replace("__", ".").into())
            .lowercase(true)
    }

    /// The names the contract promises: `HOOKSTREAM_NATS_URL`, `HOOKSTREAM_LISTEN`,
    /// `HOOKSTREAM_ALLOW_PRIVATE_NETWORKS`, `HOOKSTREAM_SSRF_ALLOWLIST` and
    /// `HOOKSTREAM_ADMIN_API_KEYS` (commas).
    fn contract_env() -> Result<serde_json::Value, ConfigError> {
        let mut out = serde_json::json!({});
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(url) = var("HOOKSTREAM_NATS_URL") {
            out["nats"] = serde_json::json!({ "url": url });
        }
        if let Some(listen) = var("HOOKSTREAM_LISTEN") {
            out["api"] = serde_json::json!({ "listen": listen });
        }
        if let Some(keys) = var("HOOKSTREAM_ADMIN_API_KEYS") {
            let keys: Vec<String> = keys
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            out["api"]["auth"] = serde_json::json!({ "admin_keys": keys });
        }
        let mut security = serde_json::Map::new();
        if let Some(flag) = var("HOOKSTREAM_ALLOW_PRIVATE_NETWORKS") {
            let flag = match flag.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    return Err(invalid(
                        "HOOKSTREAM_ALLOW_PRIVATE_NETWORKS",
                        "expected true or false",
                    ));
                }
            };
            security.insert("allow_private_networks".into(), flag.into());
        }
        if let Some(list) = var("HOOKSTREAM_SSRF_ALLOWLIST") {
            let items: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            security.insert("ssrf_allowlist".into(), items.into());
        }
        if !security.is_empty() {
            out["security"] = security.into();
        }
        Ok(out)
    }

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
        let f = &self.flow;
        if f.circuit_failure_threshold == 0 || f.circuit_probes == 0 {
            return Err(invalid(
                "flow.circuit_failure_threshold",
                "circuit_failure_threshold and circuit_probes must be at least 1",
            ));
        }
        if f.circuit_cooldown_ms == 0 || f.rate_lease_max == 0 {
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
        if !(1..=1024).contains(&self.events.delivery_shards) {
            return Err(invalid("events.delivery_shards", "must be 1 to 1024"));
        }
        if self.events.delivery_max_bytes <= 0 {
            return Err(invalid(
                "events.delivery_max_bytes",
                "must be positive: a shard without a bound could fill the disk",
            ));
        }
        if self.delivery.consumer_idle_secs == 0 {
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
        if d.default_timeout_ms == 0 {
            return Err(invalid("delivery.default_timeout_ms", "must be positive"));
        }
        if d.default_backoff_factor < 1.0 || !(0.0..=1.0).contains(&d.default_backoff_jitter) {
            return Err(invalid(
                "delivery.default_backoff_factor",
                "factor must be ≥ 1 and jitter between 0 and 1",
            ));
        }
        if d.ack_wait_margin_ms < 1000 {
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
        if d.sweep_interval_ms < 100 {
            return Err(invalid(
                "delivery.sweep_interval_ms",
                "must be at least 100",
            ));
        }
        if self.idempotency.ttl_secs == 0 {
            return Err(invalid("idempotency.ttl_secs", "must be positive"));
        }
        crate::access::keys::parse_admin_keys(&self.api.auth.admin_keys.0)
            .map_err(|why| invalid("api.auth.admin_keys", why.to_string()))?;
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
        if i.upload_max_bytes == 0 || i.upload_timeout_ms == 0 {
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
        if i.lease_ms < 1000 || i.rescan_ms == 0 || i.rescan_ms > i.lease_ms {
            return Err(invalid(
                "ingest.lease_ms",
                "lease_ms must be at least 1000 and rescan_ms between 1 and lease_ms",
            ));
        }
        if i.max_files == 0 || i.files_retention_secs == 0 {
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

    pub fn listen_addr(&self) -> SocketAddr {
        self.api
            .listen
            .parse()
            .expect("validate() checked api.listen")
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.nats.request_timeout_ms)
    }
}

fn is_subject_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_valid() {
        Config::defaults().validate().unwrap();
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure signature
    fn env_overrides_and_unknown_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOOKSTREAM_NATS_URL", "nats://10.0.0.1:4222");
            jail.set_env("HOOKSTREAM_LISTEN", "0.0.0.0:9000");
            jail.set_env("HOOKSTREAM_SSRF_ALLOWLIST", "10.0.0.0/8, hooks.internal");
            jail.set_env("HOOKSTREAM_DELIVERY__PULL_BATCH", "64");
            jail.set_env("HOOKSTREAM_NATS_SERVER_BIN", "/usr/bin/nats-server");
            let cfg = Config::load(None).expect("loads");
            assert_eq!(cfg.nats.url.as_deref(), Some("nats://10.0.0.1:4222"));
            assert_eq!(cfg.api.listen, "0.0.0.0:9000");
            assert_eq!(
                cfg.security.ssrf_allowlist,
                ["10.0.0.0/8", "hooks.internal"]
            );
            assert_eq!(cfg.delivery.pull_batch, 64);

            jail.set_env("HOOKSTREAM_DELIVERY__NO_SUCH_KEY", "1");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("no_such_key"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn validation_names_the_key() {
        let mut cfg = Config::defaults();
        cfg.events.max_consumers = -1;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("events.max_consumers"), "{err}");
        let mut cfg = Config::defaults();
        cfg.api.listen = "nope".into();
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("api.listen")
        );
    }

    #[test]
    fn replicas_must_be_an_odd_count_up_to_five() {
        for ok in [1, 3, 5] {
            let mut cfg = Config::defaults();
            cfg.nats.replicas = ok;
            cfg.validate().unwrap();
        }
        for bad in [0, 2, 4, 6] {
            let mut cfg = Config::defaults();
            cfg.nats.replicas = bad;
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains("nats.replicas"), "{bad}: {err}");
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure signature
    fn nats_user_and_password_come_from_env_and_the_password_is_never_printed() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOOKSTREAM_NATS__USER", "hookstream");
            jail.set_env("HOOKSTREAM_NATS__PASSWORD", "hunter2-secret");
            jail.set_env("HOOKSTREAM_NATS__REPLICAS", "3");
            let cfg = Config::load(None).expect("loads");
            assert_eq!(cfg.nats.user.as_deref(), Some("hookstream"));
            assert_eq!(
                cfg.nats.password.as_ref().map(Password::expose),
                Some("hunter2-secret")
            );
            assert_eq!(cfg.nats.replicas, 3);
            assert!(!format!("{cfg:?}").contains("hunter2"));

            jail.clear_env();
            jail.set_env("HOOKSTREAM_NATS__PASSWORD", "alone");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("nats.password"), "{err}");
            Ok(())
        });
    }
}
