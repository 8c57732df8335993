//! `DestinationStore`: create, read, list, change and delete destinations in the
//! `hs_destinations` bucket, with compare-and-set on every change.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};

use super::registry::Registry;
use super::ssrf::SsrfPolicy;
use super::{DestinationError, decode, encode, validate};
use crate::broker::consumers::{self, ConsumerPolicy};
use crate::broker::{Broker, BrokerError, names};
use crate::config::Config;
use crate::config::duration::whole_millis;
use crate::model::{
    Backoff, Destination, DestinationId, DestinationInput, DestinationPatch, RetryPolicy,
    SecretKey, SigningSecret, TenantId,
};

/// How long the old secrets keep signing after a rotation, unless the request says.
pub const ROTATION_GRACE: Duration = Duration::from_secs(86_400);

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
                base_ms: whole_millis(d.default_backoff_base),
                factor: d.default_backoff_factor,
                max_ms: whole_millis(d.default_backoff_max),
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
            timeout_ms: input.timeout_ms.unwrap_or(whole_millis(d.default_timeout)),
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
            parsed_url: Default::default(),
        };
        validate::check(&self.ssrf, &destination)?;
        if self.get(&destination.id).await?.is_some() {
            return Err(DestinationError::Exists(destination.id.to_string()));
        }
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
            validate::check(&self.ssrf, &destination)?;
            match self
                .broker
                .destinations
                .update(id.as_str(), encode(&destination), revision)
                .await
            {
                Ok(revision) => {
                    self.remember(&destination, revision);
                    // A consumer that exists follows the change (pause, concurrency, ack
                    // wait); one made later is made from the new entry.
                    self.update_consumer(&destination).await?;
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
            dest.timeout_ms = input.timeout_ms.unwrap_or(whole_millis(d.default_timeout));
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
        // Routing semantics: deliveries already routed to a deleted destination are
        // discarded with its consumer (a single-subject purge of its shard).
        let shard = self.broker.shard_stream(id.as_str());
        consumers::delete(shard, &names::consumer_name(id)).await?;
        let subject = self
            .broker
            .subjects
            .delivery(self.broker.shard_of(id.as_str()), id.as_str());
        shard
            .purge()
            .filter(subject)
            .await
            .map_err(|e| BrokerError::new("discarding a deleted destination's deliveries", e))?;
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

    /// Disables a destination on hookstream's own initiative (`410 Gone`, failing for
    /// too long). `Ok(true)`: this call disabled it; `Ok(false)`: it was disabled
    /// already (by an operator, or by another replica first), and is left as it is.
    pub async fn disable(
        &self,
        id: &DestinationId,
        reason: String,
    ) -> Result<bool, DestinationError> {
        match self.get(id).await? {
            Some((d, _)) if d.enabled => {}
            _ => return Ok(false),
        }
        // Atomic rather than a Cell: the future must stay Send.
        let disabled_here = std::sync::atomic::AtomicBool::new(false);
        self.modify(id, |dest| {
            // The last round of the compare-and-set is the one written.
            disabled_here.store(dest.enabled, std::sync::atomic::Ordering::Relaxed);
            if dest.enabled {
                dest.enabled = false;
                dest.disabled_reason = Some(reason.clone());
            }
            Ok(())
        })
        .await?;
        Ok(disabled_here.into_inner())
    }

    /// What destination consumers are derived from besides the destination.
    pub fn consumer_policy(&self) -> ConsumerPolicy {
        consumer_policy(&self.cfg)
    }

    /// Makes the destination's consumer match it, if it has one now.
    pub async fn update_consumer(&self, destination: &Destination) -> Result<(), DestinationError> {
        let id = destination.id.as_str();
        let config = consumers::desired_config(
            destination,
            &self.broker.subjects,
            self.broker.shard_of(id),
            self.consumer_policy(),
        );
        consumers::update_if_present(self.broker.shard_stream(id), config).await?;
        Ok(())
    }
}

/// What destination consumers are derived from besides the destination.
pub fn consumer_policy(cfg: &Config) -> ConsumerPolicy {
    ConsumerPolicy {
        ack_wait_margin: cfg.delivery.ack_wait_margin,
        idle: cfg.delivery.consumer_idle,
    }
}

fn set_enabled(dest: &mut Destination, enabled: bool) {
    dest.enabled = enabled;
    if enabled {
        dest.disabled_reason = None;
    }
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
