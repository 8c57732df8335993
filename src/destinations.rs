//! Destination management: validation, the `hs_destinations` bucket, and the consumer
//! that goes with each destination. Used by the API (CRUD) and by workers (a `410 Gone`
//! disables a destination).
//!
//! Order of writes: on create and update the consumer is made to match *before* the
//! bucket entry is written, so that a destination the API reports is already receiving
//! (an event sent right after the create is not missed) and a refused consumer (e.g. the
//! stream's consumer limit) leaves no half-created destination. On delete the entry goes
//! first, so workers stop, then the consumer; workers remove any consumer left orphaned.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};

use crate::broker::{Broker, BrokerError, BrokerErrorKind, consumers, names};
use crate::config::Config;
use crate::delivery::registry::Registry;
use crate::delivery::ssrf::SsrfPolicy;
use crate::model::{
    Backoff, Destination, DestinationId, DestinationInput, DestinationPatch, RetryPolicy,
    SecretKey, SigningSecret, TenantId,
};

#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("{0}")]
    Invalid(String),
    #[error("destination {0} not found")]
    NotFound(String),
    #[error("destination {0} already exists")]
    Exists(String),
    #[error("destination {0} was changed concurrently; retry")]
    Conflict(String),
    #[error(
        "the events stream has reached its consumer limit (events.max_consumers); no destination can be added"
    )]
    ConsumerLimit,
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

pub const MAX_EVENT_TYPES: usize = 64;
/// How long the old secrets keep signing after a rotation, unless the request says.
pub const ROTATION_GRACE: Duration = Duration::from_secs(86_400);
pub const MAX_HEADERS: usize = 32;
const RESERVED_HEADERS: [&str; 10] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "hs-event-type",
    "hs-attempt",
    "traceparent",
];

#[derive(Clone)]
pub struct DestinationStore {
    broker: Broker,
    cfg: Arc<Config>,
    ssrf: Arc<SsrfPolicy>,
    /// This process's worker view, updated right after each write so that the process
    /// reads its own writes (other replicas follow through their bucket watch).
    local: Option<Arc<Registry>>,
}

impl DestinationStore {
    pub fn new(
        broker: Broker,
        cfg: Arc<Config>,
        ssrf: Arc<SsrfPolicy>,
        local: Option<Arc<Registry>>,
    ) -> Self {
        Self {
            broker,
            cfg,
            ssrf,
            local,
        }
    }

    fn remember(&self, destination: &Destination, revision: u64) {
        if let Some(registry) = &self.local {
            registry.upsert(destination.clone(), revision);
        }
    }

    fn default_retry(&self) -> RetryPolicy {
        let d = &self.cfg.delivery;
        RetryPolicy {
            schedule_ms: None,
            backoff: Some(Backoff {
                base_ms: d.default_backoff_base_ms,
                factor: d.default_backoff_factor,
                max_ms: d.default_backoff_max_ms,
                jitter: d.default_backoff_jitter,
            }),
            max_attempts: d.default_max_attempts,
        }
    }

    /// Creates a destination; answers it with its secret, shown this once.
    pub async fn create(
        &self,
        input: DestinationInput,
    ) -> Result<(Destination, SecretKey), DestinationError> {
        let now = Utc::now();
        let key = match &input.secret {
            Some(text) => SecretKey::parse(text).map_err(DestinationError::Invalid)?,
            None => SecretKey::generate(),
        };
        let id = input.id.clone().unwrap_or_else(DestinationId::generate);
        let d = self.cfg.delivery.clone();
        let destination = Destination {
            id,
            tenant: input.tenant.unwrap_or_default(),
            url: input.url,
            method: input.method.unwrap_or_default(),
            event_types: input.event_types,
            body: input.body.unwrap_or_default(),
            headers: input.headers.unwrap_or_default(),
            rate_limit: input.rate_limit,
            max_in_flight: input.max_in_flight.unwrap_or(d.default_max_in_flight),
            timeout_ms: input.timeout_ms.unwrap_or(d.default_timeout_ms),
            retry: input.retry.unwrap_or_else(|| self.default_retry()),
            ordered: input.ordered.unwrap_or(false),
            enabled: input.enabled.unwrap_or(true),
            paused: false,
            disabled_reason: None,
            description: input.description,
            secrets: vec![SigningSecret {
                key: key.clone(),
                created_at: now,
                expires_at: None,
            }],
            created_at: now,
            updated_at: now,
        };
        self.validate(&destination)?;
        if self.get(&destination.id).await?.is_some() {
            return Err(DestinationError::Exists(destination.id.to_string()));
        }
        self.sync_consumer(&destination).await?;
        let value = encode(&destination);
        match self
            .broker
            .destinations
            .create(destination.id.as_str(), value)
            .await
        {
            Ok(revision) => {
                self.remember(&destination, revision);
                Ok((destination, key))
            }
            Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                Err(DestinationError::Exists(destination.id.to_string()))
            }
            Err(e) => Err(BrokerError::new("storing destination", e).into()),
        }
    }

    /// The destination and its bucket revision.
    pub async fn get(
        &self,
        id: &DestinationId,
    ) -> Result<Option<(Destination, u64)>, DestinationError> {
        let entry = self
            .broker
            .destinations
            .entry(id.as_str())
            .await
            .map_err(|e| BrokerError::new("reading destination", e))?;
        match entry {
            Some(e) if e.operation == async_nats::jetstream::kv::Operation::Put => {
                let destination = decode(&e.value)?;
                Ok(Some((destination, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Destinations sorted by id, after `cursor`, optionally of one tenant.
    pub async fn list(
        &self,
        tenant: Option<&TenantId>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Destination>, Option<String>), DestinationError> {
        let mut keys: Vec<String> = match self.broker.destinations.keys().await {
            Ok(keys) => keys
                .try_collect()
                .await
                .map_err(|e| BrokerError::new("listing destinations", e))?,
            Err(e) => return Err(BrokerError::new("listing destinations", e).into()),
        };
        keys.sort();
        let start = after.map_or(0, |c| keys.partition_point(|k| k.as_str() <= c));
        let mut out = Vec::new();
        // Read in pages of `limit`, concurrently, until the page is full (a tenant filter
        // may skip entries).
        for chunk in keys[start..].chunks(limit.max(1)) {
            let read: Vec<Option<Destination>> = futures::stream::iter(chunk.to_vec())
                .map(|k| self.get_by_key(k))
                .buffered(32)
                .collect()
                .await;
            for (key, destination) in chunk.iter().zip(read) {
                if let Some(d) = destination
                    && tenant.is_none_or(|t| &d.tenant == t)
                {
                    out.push(d);
                    if out.len() == limit {
                        let more = keys.last() != Some(key);
                        return Ok((out, more.then(|| key.clone())));
                    }
                }
            }
        }
        Ok((out, None))
    }

    async fn get_by_key(&self, key: String) -> Option<Destination> {
        let id = DestinationId::parse(key).ok()?;
        self.get(&id).await.ok().flatten().map(|(d, _)| d)
    }

    /// Applies `change` to the stored destination with compare-and-set on its revision.
    pub async fn modify(
        &self,
        id: &DestinationId,
        change: impl Fn(&mut Destination) -> Result<(), DestinationError>,
    ) -> Result<Destination, DestinationError> {
        for _ in 0..5 {
            let (mut destination, revision) = self
                .get(id)
                .await?
                .ok_or_else(|| DestinationError::NotFound(id.to_string()))?;
            change(&mut destination)?;
            destination.updated_at = Utc::now();
            self.validate(&destination)?;
            self.sync_consumer(&destination).await?;
            match self
                .broker
                .destinations
                .update(id.as_str(), encode(&destination), revision)
                .await
            {
                Ok(revision) => {
                    self.remember(&destination, revision);
                    return Ok(destination);
                }
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision =>
                {
                    continue;
                }
                Err(e) => return Err(BrokerError::new("storing destination", e).into()),
            }
        }
        Err(DestinationError::Conflict(id.to_string()))
    }

    /// PUT: replaces every field but id, tenant, secrets and creation time.
    pub async fn replace(
        &self,
        id: &DestinationId,
        input: DestinationInput,
    ) -> Result<Destination, DestinationError> {
        if input.secret.is_some() {
            return Err(DestinationError::Invalid(
                "secret can only be set on create; use rotate-secret".into(),
            ));
        }
        if input.id.as_ref().is_some_and(|i| i != id) {
            return Err(DestinationError::Invalid(
                "id in the body differs from the path".into(),
            ));
        }
        let defaults = self.default_retry();
        let d = self.cfg.delivery.clone();
        self.modify(id, |dest| {
            if input.tenant.as_ref().is_some_and(|t| t != &dest.tenant) {
                return Err(DestinationError::Invalid(
                    "a destination cannot move to another tenant".into(),
                ));
            }
            dest.url = input.url.clone();
            dest.method = input.method.unwrap_or_default();
            dest.event_types = input.event_types.clone();
            dest.body = input.body.unwrap_or_default();
            dest.headers = input.headers.clone().unwrap_or_default();
            dest.rate_limit = input.rate_limit;
            dest.max_in_flight = input.max_in_flight.unwrap_or(d.default_max_in_flight);
            dest.timeout_ms = input.timeout_ms.unwrap_or(d.default_timeout_ms);
            dest.retry = input.retry.clone().unwrap_or_else(|| defaults.clone());
            dest.ordered = input.ordered.unwrap_or(false);
            if let Some(enabled) = input.enabled {
                set_enabled(dest, enabled);
            }
            dest.description = input.description.clone();
            Ok(())
        })
        .await
    }

    pub async fn patch(
        &self,
        id: &DestinationId,
        patch: DestinationPatch,
    ) -> Result<Destination, DestinationError> {
        self.modify(id, |dest| {
            let p = patch.clone();
            if let Some(v) = p.url {
                dest.url = v;
            }
            if let Some(v) = p.method {
                dest.method = v;
            }
            if let Some(v) = p.event_types {
                dest.event_types = v;
            }
            if let Some(v) = p.body {
                dest.body = v;
            }
            if let Some(v) = p.headers {
                dest.headers = v;
            }
            if let Some(v) = p.rate_limit {
                dest.rate_limit = v;
            }
            if let Some(v) = p.max_in_flight {
                dest.max_in_flight = v;
            }
            if let Some(v) = p.timeout_ms {
                dest.timeout_ms = v;
            }
            if let Some(v) = p.retry {
                dest.retry = v;
            }
            if let Some(v) = p.ordered {
                dest.ordered = v;
            }
            if let Some(v) = p.enabled {
                set_enabled(dest, v);
            }
            if let Some(v) = p.description {
                dest.description = v;
            }
            Ok(())
        })
        .await
    }

    pub async fn delete(&self, id: &DestinationId) -> Result<(), DestinationError> {
        let Some((_, revision)) = self.get(id).await? else {
            return Err(DestinationError::NotFound(id.to_string()));
        };
        self.broker
            .destinations
            .delete(id.as_str())
            .await
            .map_err(|e| BrokerError::new("deleting destination", e))?;
        if let Some(registry) = &self.local {
            // The delete marker's revision is above the entry's; one more is enough to
            // keep the late watch entry of the old value out.
            registry.remove(id.as_str(), revision + 1);
        }
        consumers::delete(&self.broker.events, &names::consumer_name(id)).await?;
        // Its counters go with it.
        let _ = self
            .broker
            .stats
            .purge()
            .filter(self.broker.subjects.stats_of(id.as_str()))
            .await;
        Ok(())
    }

    /// A new secret signs from now on; the old ones keep signing for `grace`.
    pub async fn rotate_secret(
        &self,
        id: &DestinationId,
        secret: Option<String>,
        grace: Duration,
    ) -> Result<(Destination, SecretKey), DestinationError> {
        let key = match secret {
            Some(text) => SecretKey::parse(&text).map_err(DestinationError::Invalid)?,
            None => SecretKey::generate(),
        };
        let grace = chrono::Duration::from_std(grace)
            .map_err(|_| DestinationError::Invalid("grace period too long".into()))?;
        let destination = self
            .modify(id, |dest| {
                let now = Utc::now();
                dest.secrets.retain(|s| s.is_active(now));
                for old in &mut dest.secrets {
                    let until = now + grace;
                    old.expires_at = Some(old.expires_at.map_or(until, |t| t.min(until)));
                }
                dest.secrets.insert(
                    0,
                    SigningSecret {
                        key: key.clone(),
                        created_at: now,
                        expires_at: None,
                    },
                );
                dest.secrets.truncate(5);
                Ok(())
            })
            .await?;
        Ok((destination, key))
    }

    pub async fn set_paused(
        &self,
        id: &DestinationId,
        paused: bool,
    ) -> Result<Destination, DestinationError> {
        self.modify(id, |dest| {
            dest.paused = paused;
            Ok(())
        })
        .await
    }

    /// Disables a destination on hookstream's own initiative (e.g. `410 Gone`).
    pub async fn disable(
        &self,
        id: &DestinationId,
        reason: String,
    ) -> Result<(), DestinationError> {
        self.modify(id, |dest| {
            dest.enabled = false;
            dest.disabled_reason = Some(reason.clone());
            Ok(())
        })
        .await
        .map(drop)
    }

    /// Makes the destination's consumer match it.
    pub async fn sync_consumer(&self, destination: &Destination) -> Result<(), DestinationError> {
        let config = consumers::desired_config(
            destination,
            &self.broker.subjects,
            Duration::from_millis(self.cfg.delivery.ack_wait_margin_ms),
        );
        let paused = consumers::upsert(&self.broker.events, config)
            .await
            .map_err(|e| match e.kind {
                BrokerErrorKind::ConsumerLimit => DestinationError::ConsumerLimit,
                _ => DestinationError::from(e),
            })?;
        // An update does not change a consumer's pause state (only its creation does):
        // pause or resume explicitly when it differs.
        let name = names::consumer_name(&destination.id);
        let want_paused = !destination.is_active();
        if paused != want_paused {
            consumers::set_paused(&self.broker.events, &name, want_paused).await?;
        }
        Ok(())
    }

    fn validate(&self, d: &Destination) -> Result<(), DestinationError> {
        let bad = |m: String| Err(DestinationError::Invalid(m));
        let template_free = d.url.replace(['{', '}'], "");
        let url = match url::Url::parse(&template_free) {
            Ok(u) => u,
            Err(e) => return bad(format!("url is not a valid URL: {e}")),
        };
        if !matches!(url.scheme(), "http" | "https") {
            return bad("url must be http or https".into());
        }
        if d.url.contains('{') && d.method != crate::model::HttpMethod::Get {
            return bad("URL templates ({placeholder}) are only for GET destinations".into());
        }
        if let Err(why) = self.ssrf.check_url(&url) {
            return bad(format!("url refused: {why}"));
        }
        if d.event_types.is_empty() || d.event_types.len() > MAX_EVENT_TYPES {
            return bad(format!(
                "event_types must hold 1 to {MAX_EVENT_TYPES} patterns"
            ));
        }
        if d.headers.len() > MAX_HEADERS {
            return bad(format!("at most {MAX_HEADERS} headers"));
        }
        for (name, value) in &d.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(value).is_err()
            {
                return bad(format!("header {name:?} is not a valid HTTP header"));
            }
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return bad(format!("header {name:?} is set by hookstream"));
            }
        }
        if !(1..=10_000).contains(&d.max_in_flight) {
            return bad("max_in_flight must be 1 to 10000".into());
        }
        if !(100..=300_000).contains(&d.timeout_ms) {
            return bad("timeout_ms must be 100 to 300000".into());
        }
        if let Some(rl) = d.rate_limit
            && (!(rl.per_second > 0.0 && rl.per_second <= 100_000.0) || rl.burst == 0)
        {
            return bad("rate_limit needs per_second in (0, 100000] and burst ≥ 1".into());
        }
        validate_retry(&d.retry).map_err(DestinationError::Invalid)?;
        if d.description.as_ref().is_some_and(|s| s.len() > 1024) {
            return bad("description is at most 1024 bytes".into());
        }
        Ok(())
    }
}

fn set_enabled(dest: &mut Destination, enabled: bool) {
    dest.enabled = enabled;
    if enabled {
        dest.disabled_reason = None;
    }
}

pub fn validate_retry(r: &RetryPolicy) -> Result<(), String> {
    if !(1..=100).contains(&r.max_attempts) {
        return Err("retry.max_attempts must be 1 to 100".into());
    }
    match (&r.schedule_ms, &r.backoff) {
        (Some(_), Some(_)) => Err("retry takes schedule_ms or backoff, not both".into()),
        (None, None) => Err("retry needs schedule_ms or backoff".into()),
        (Some(s), None) => {
            if s.is_empty() && r.max_attempts > 1 {
                return Err("retry.schedule_ms is empty but max_attempts > 1".into());
            }
            if s.iter().any(|d| *d > 7 * 24 * 3_600_000) {
                return Err("retry.schedule_ms delays are at most 7 days".into());
            }
            Ok(())
        }
        (None, Some(b)) => {
            if b.base_ms == 0 || b.max_ms < b.base_ms || b.max_ms > 7 * 24 * 3_600_000 {
                return Err("retry.backoff needs 0 < base_ms ≤ max_ms ≤ 7 days".into());
            }
            if !(1.0..=100.0).contains(&b.factor) || !(0.0..=1.0).contains(&b.jitter) {
                return Err("retry.backoff needs factor in [1, 100] and jitter in [0, 1]".into());
            }
            Ok(())
        }
    }
}

pub fn encode(d: &Destination) -> Bytes {
    serde_json::to_vec(d)
        .expect("destination serialises")
        .into()
}

pub fn decode(bytes: &[u8]) -> Result<Destination, DestinationError> {
    serde_json::from_slice(bytes).map_err(|e| {
        DestinationError::Broker(BrokerError::with_kind(
            BrokerErrorKind::Other,
            "decoding a stored destination",
            e,
        ))
    })
}

/// The event `/test` sends: type `hookstream.test`, to this destination only.
pub fn test_event(destination: &Destination) -> crate::model::NewEvent {
    let data = serde_json::json!({
        "message": "hookstream test event",
        "destination_id": destination.id,
    });
    crate::model::NewEvent {
        id: None,
        tenant: Some(destination.tenant.clone()),
        event_type: crate::model::EventType::parse("hookstream.test").expect("a valid type"),
        data: serde_json::value::RawValue::from_string(data.to_string()).expect("valid JSON"),
        source: Some("hookstream".into()),
        occurred_at: None,
        destination_id: Some(destination.id.clone()),
    }
}
