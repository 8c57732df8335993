//! Destinations: where a tenant's events go and how they are sent there.
//!
//! `Destination` is what the `hs_destinations` bucket stores (secrets included);
//! `DestinationView` is what the API shows (secrets never, except once on create/rotate).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ids::{DestinationId, TenantId};
use super::pattern::EventPattern;
use super::secret::SigningSecret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Post,
    Put,
    Get,
}

/// What the request body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyMode {
    /// The whole envelope `{"id","tenant","type",…,"data"}`.
    #[default]
    Envelope,
    /// Only the event's `data`.
    Data,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    pub base_ms: u64,
    pub factor: f64,
    pub max_ms: u64,
    /// Fraction of the delay drawn at random either way: 0.2 → ±20 %.
    #[serde(default)]
    pub jitter: f64,
}

/// How a failed attempt is retried. Either an explicit schedule (the delays before the 2nd,
/// 3rd, … attempt) or exponential backoff; `max_attempts` counts the first attempt too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_ms: Option<Vec<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    pub max_attempts: u32,
}

/// A destination as stored in `hs_destinations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub id: DestinationId,
    pub tenant: TenantId,
    pub url: String,
    pub method: HttpMethod,
    pub event_types: Vec<EventPattern>,
    pub body: BodyMode,
    pub headers: BTreeMap<String, String>,
    pub rate_limit: Option<RateLimit>,
    pub max_in_flight: u32,
    pub timeout_ms: u64,
    pub retry: RetryPolicy,
    pub ordered: bool,
    pub enabled: bool,
    /// Operator pause (`/pause`): nothing is sent, events wait in the stream.
    #[serde(default)]
    pub paused: bool,
    /// Why hookstream disabled the destination itself: the receiver's `410 Gone` (a
    /// sentence naming it), or `failing` (every attempt failed for
    /// `delivery.disable_after_secs`). Cleared when it is enabled again.
    #[serde(default)]
    pub disabled_reason: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Newest first; older ones keep signing until they expire (rotation grace).
    pub secrets: Vec<SigningSecret>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `url` parsed, the first time a request needs it: parsing (with IDNA) was 4 % of
    /// the worker's CPU per delivery when it was done for every request (docs/PERFORMANCE.md).
    /// A changed destination is a new value in the registry, so this never goes stale.
    #[serde(skip)]
    pub parsed_url: ParsedUrl,
}

/// The cache of [`Destination::parsed_url`]. A clone starts empty: a cloned destination
/// may get another `url` before it is used.
#[derive(Default)]
pub struct ParsedUrl(std::sync::OnceLock<Result<url::Url, String>>);

impl Clone for ParsedUrl {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for ParsedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("_")
    }
}

impl Destination {
    /// `url` parsed once (an error says why it is not a URL).
    pub fn parsed_url(&self) -> Result<&url::Url, &str> {
        self.parsed_url
            .0
            .get_or_init(|| url::Url::parse(&self.url).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(String::as_str)
    }

    /// Whether deliveries may be sent now (enabled and not paused).
    pub fn is_active(&self) -> bool {
        self.enabled && !self.paused
    }

    pub fn accepts(&self, event_type: &str) -> bool {
        self.event_types.iter().any(|p| p.subscribes_to(event_type))
    }

    pub fn view(&self) -> DestinationView {
        DestinationView {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            url: self.url.clone(),
            method: self.method,
            event_types: self
                .event_types
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
            body: self.body,
            headers: self.headers.clone(),
            rate_limit: self.rate_limit,
            max_in_flight: self.max_in_flight,
            timeout_ms: self.timeout_ms,
            retry: self.retry.clone(),
            ordered: self.ordered,
            enabled: self.enabled,
            paused: self.paused,
            disabled_reason: self.disabled_reason.clone(),
            description: self.description.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            secret: None,
            circuit: None,
        }
    }
}

/// A destination as the API shows it. `secret` is set only in the answers to create and
/// rotate-secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DestinationView {
    #[schema(value_type = String)]
    pub id: DestinationId,
    #[schema(value_type = String)]
    pub tenant: TenantId,
    pub url: String,
    pub method: HttpMethod,
    pub event_types: Vec<String>,
    pub body: BodyMode,
    pub headers: BTreeMap<String, String>,
    pub rate_limit: Option<RateLimit>,
    pub max_in_flight: u32,
    pub timeout_ms: u64,
    pub retry: RetryPolicy,
    pub ordered: bool,
    pub enabled: bool,
    pub paused: bool,
    /// Set when hookstream disabled it: the receiver's `410 Gone`, or `failing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The circuit breaker, shared by all replicas (absent where the API cannot see it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit: Option<super::circuit::CircuitView>,
}

/// The body of `POST /v1/destinations` and `PUT /v1/destinations/{id}`: every field but
/// `url` and `event_types` falls back to the configured defaults.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationInput {
    #[schema(value_type = Option<String>)]
    pub id: Option<DestinationId>,
    #[schema(value_type = Option<String>)]
    pub tenant: Option<TenantId>,
    pub url: String,
    pub method: Option<HttpMethod>,
    #[schema(value_type = Vec<String>)]
    pub event_types: Vec<EventPattern>,
    pub body: Option<BodyMode>,
    pub headers: Option<BTreeMap<String, String>>,
    pub rate_limit: Option<RateLimit>,
    pub max_in_flight: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub retry: Option<RetryPolicy>,
    pub ordered: Option<bool>,
    pub enabled: Option<bool>,
    pub description: Option<String>,
    /// `whsec_<base64>`; generated when absent. Only on create.
    pub secret: Option<String>,
}

/// The body of `PATCH /v1/destinations/{id}`: only the fields given change. `null` clears
/// an optional field (`rate_limit`, `description`).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationPatch {
    pub url: Option<String>,
    pub method: Option<HttpMethod>,
    #[schema(value_type = Option<Vec<String>>)]
    pub event_types: Option<Vec<EventPattern>>,
    pub body: Option<BodyMode>,
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<RateLimit>)]
    pub rate_limit: Option<Option<RateLimit>>,
    pub max_in_flight: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub retry: Option<RetryPolicy>,
    pub ordered: Option<bool>,
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
}

/// Tells a missing field (`None`) from an explicit `null` (`Some(None)`).
fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
