//! Configuration: embedded defaults (`default.toml`, each key commented) ← optional TOML
//! file ← `HOOKSTREAM_*` environment. Unknown keys are errors; `validate()` names the bad
//! key and why, and checks the combinations that only fail later at run time.
//!
//! About 540 lines, 120 of them unit tests; the checks live in `validate.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub mod duration;
mod validate;

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
    pub runtime: RuntimeConfig,
}

/// The async runtime the service runs on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Runtime threads; 0 = one per CPU the process may use.
    pub worker_threads: usize,
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
    #[serde(rename = "request_timeout_ms", with = "duration::millis")]
    pub request_timeout: Duration,
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
    #[serde(rename = "request_timeout_ms", with = "duration::millis")]
    pub request_timeout: Duration,
    #[serde(rename = "retry_after_secs", with = "duration::secs")]
    pub retry_after: Duration,
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
    #[serde(rename = "max_age_secs", with = "duration::secs")]
    pub max_age: Duration,
    pub max_bytes: i64,
    #[serde(rename = "duplicate_window_secs", with = "duration::secs")]
    pub duplicate_window: Duration,
    pub max_consumers: i32,
    pub max_batch: usize,
    // Routing (docs/adr/0010).
    pub delivery_shards: u32,
    pub delivery_max_bytes: i64,
    pub delivery_max_per_destination: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(rename = "max_age_secs", with = "duration::secs")]
    pub max_age: Duration,
    pub max_bytes: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    #[serde(rename = "ttl_secs", with = "duration::secs")]
    pub ttl: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(rename = "default_timeout_ms", with = "duration::millis")]
    pub default_timeout: Duration,
    pub default_max_in_flight: u32,
    pub default_max_attempts: u32,
    #[serde(rename = "default_backoff_base_ms", with = "duration::millis")]
    pub default_backoff_base: Duration,
    pub default_backoff_factor: f64,
    #[serde(rename = "default_backoff_max_ms", with = "duration::millis")]
    pub default_backoff_max: Duration,
    pub default_backoff_jitter: f64,
    #[serde(rename = "retry_after_cap_ms", with = "duration::millis")]
    pub retry_after_cap: Duration,
    pub pull_batch: usize,
    #[serde(rename = "sweep_interval_ms", with = "duration::millis")]
    pub sweep_interval: Duration,
    #[serde(rename = "ack_wait_margin_ms", with = "duration::millis")]
    pub ack_wait_margin: Duration,
    pub max_in_flight_total: usize,
    #[serde(rename = "slow_delivery_ms", with = "duration::millis")]
    pub slow_delivery: Duration,
    #[serde(rename = "shutdown_grace_ms", with = "duration::millis")]
    pub shutdown_grace: Duration,
    #[serde(rename = "stats_flush_ms", with = "duration::millis")]
    pub stats_flush: Duration,
    // Routing (docs/adr/0010).
    #[serde(rename = "consumer_idle_secs", with = "duration::secs")]
    pub consumer_idle: Duration,
    // Operational events (docs/adr/0013): zero = never disable for failing.
    #[serde(rename = "disable_after_secs", with = "duration::secs")]
    pub disable_after: Duration,
}

/// Circuit breakers, shared rate limits, tenant ingest limits (`src/flow/`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    pub circuit_failure_threshold: u32,
    #[serde(rename = "circuit_cooldown_ms", with = "duration::millis")]
    pub circuit_cooldown: Duration,
    pub circuit_probes: u32,
    #[serde(rename = "rate_lease_horizon_ms", with = "duration::millis")]
    pub rate_lease_horizon: Duration,
    pub rate_lease_max: u32,
    pub tenant_default: TenantLimit,
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, TenantLimit>,
    // Operational events (docs/adr/0013).
    #[serde(rename = "circuit_announce_interval_ms", with = "duration::millis")]
    pub circuit_announce_interval: Duration,
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
    #[serde(rename = "upload_timeout_ms", with = "duration::millis")]
    pub upload_timeout: Duration,
    pub publish_window: usize,
    pub checkpoint_lines: u64,
    #[serde(rename = "lease_ms", with = "duration::millis")]
    pub lease: Duration,
    #[serde(rename = "rescan_ms", with = "duration::millis")]
    pub rescan: Duration,
    pub max_files: usize,
    pub errors_kept: usize,
    #[serde(rename = "files_retention_secs", with = "duration::secs")]
    pub files_retention: Duration,
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
    #[serde(
        rename = "settle_ms",
        with = "duration::millis",
        default = "default_settle"
    )]
    pub settle: Duration,
}

fn default_tenant() -> String {
    "default".into()
}

fn default_settle() -> Duration {
    Duration::from_secs(2)
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

    pub fn listen_addr(&self) -> SocketAddr {
        self.api
            .listen
            .parse()
            .expect("validate() checked api.listen")
    }

    pub fn request_timeout(&self) -> Duration {
        self.nats.request_timeout
    }
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
    fn durations_keep_their_ms_and_secs_keys_in_files_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            let defaults = Config::defaults();
            assert_eq!(defaults.delivery.shutdown_grace, Duration::from_secs(20));
            assert_eq!(defaults.delivery.consumer_idle, Duration::from_secs(300));
            assert_eq!(defaults.events.max_age, Duration::from_secs(7 * 86_400));
            jail.create_file(
                "hookstream.toml",
                "[delivery]\nshutdown_grace_ms = 1234\nconsumer_idle_secs = 7\n",
            )?;
            jail.set_env("HOOKSTREAM_FLOW__CIRCUIT_COOLDOWN_MS", "4500");
            jail.set_env("HOOKSTREAM_EVENTS__MAX_AGE_SECS", "3600");
            let cfg = Config::load(Some(Path::new("hookstream.toml"))).expect("loads");
            assert_eq!(cfg.delivery.shutdown_grace, Duration::from_millis(1234));
            assert_eq!(cfg.delivery.consumer_idle, Duration::from_secs(7));
            assert_eq!(cfg.flow.circuit_cooldown, Duration::from_millis(4500));
            assert_eq!(cfg.events.max_age, Duration::from_secs(3600));
            // Written back under the same keys, as integers.
            let written = serde_json::to_value(&cfg).expect("serialises");
            assert_eq!(written["delivery"]["shutdown_grace_ms"], 1234);
            assert_eq!(written["events"]["max_age_secs"], 3600);
            assert!(written["delivery"].get("shutdown_grace").is_none());
            jail.set_env("HOOKSTREAM_DELIVERY__SHUTDOWN_GRACE", "5");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("shutdown_grace"),
                "the new name is no key: {err}"
            );
            Ok(())
        });
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

            jail.set_env("HOOKSTREAM_RUNTIME__WORKER_THREADS", "1");
            assert_eq!(Config::load(None).unwrap().runtime.worker_threads, 1);

            jail.set_env("HOOKSTREAM_DELIVERY__NO_SUCH_KEY", "1");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("no_such_key"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn validation_names_the_key() {
        let mut cfg = Config::defaults();
        cfg.runtime.worker_threads = 5_000;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("runtime.worker_threads"), "{err}");
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
        let mut cfg = Config::defaults();
        cfg.events.delivery_max_per_destination = -1;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("events.delivery_max_per_destination"), "{err}");
        cfg.events.delivery_max_per_destination = 0;
        cfg.validate()
            .expect("0 turns the per-destination limit off");
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
