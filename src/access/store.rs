//! `KeyStore`: every key that may be used, as hashes in memory.
//!
//! - Admin keys come from the config, hashed once at start.
//! - Tenant and ingest keys live in KV `hs_api_keys` (id → [`KeyRecord`], the key's
//!   SHA-256, never the key). Every replica watches the bucket, so a check is a hash and
//!   a map look-up, and a deleted key stops working wherever the deletion is seen (a KV
//!   watch pushes it within milliseconds; the contract allows 2 s).
//! - A failed check reads nothing from NATS: a flood of wrong keys costs a hash each.
//! - A watch that ends (NATS restarted) is reopened and the whole map rebuilt from the
//!   bucket, so a deletion missed in between still takes effect.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv::{self, Entry, Operation};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::keys::{self, KeyHash, NewKey};
use super::{Policy, Principal, Role};
use crate::broker::watch::{BucketWatch, Change, Opened};
use crate::broker::{Broker, BrokerError, BrokerErrorKind, setup};
use crate::config::Config;
use crate::model::TenantId;

/// One tenant or ingest key as `hs_api_keys` stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub id: String,
    pub tenant: TenantId,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
}

impl KeyRecord {
    fn principal(&self) -> Principal {
        Principal {
            key_id: self.id.clone(),
            role: self.role,
            tenant: Some(self.tenant.clone()),
        }
    }
}

/// The stored keys as this replica knows them.
#[derive(Default)]
struct Known {
    by_hash: HashMap<KeyHash, Arc<Principal>>,
    records: BTreeMap<String, KeyRecord>,
}

impl Known {
    fn insert(&mut self, record: KeyRecord) {
        let Some(hash) = KeyHash::from_hex(&record.sha256) else {
            warn!(key_id = %record.id, "API key record without a valid hash ignored");
            return;
        };
        self.remove(&record.id);
        self.by_hash.insert(hash, Arc::new(record.principal()));
        self.records.insert(record.id.clone(), record);
    }

    fn remove(&mut self, id: &str) -> bool {
        let Some(old) = self.records.remove(id) else {
            return false;
        };
        if let Some(hash) = KeyHash::from_hex(&old.sha256) {
            self.by_hash.remove(&hash);
        }
        true
    }
}

struct Inner {
    bucket: kv::Store,
    policy: Policy,
    admins: HashMap<KeyHash, Arc<Principal>>,
    known: RwLock<Known>,
    open: Arc<Principal>,
}

/// Cheap to clone (one `Arc`). Made by [`KeyStore::open`]; its [`KeyWatch`] must run for
/// the store to see keys made and deleted by other replicas.
#[derive(Clone)]
pub struct KeyStore(Arc<Inner>);

/// Why a request is not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No key where one is needed.
    Missing,
    /// A key that is not (or no longer) valid.
    Unknown,
}

impl KeyStore {
    /// Creates the bucket if needed and loads every key in it before returning, so the
    /// first request after start is checked against all of them.
    pub async fn open(
        broker: &Broker,
        cfg: &Config,
        policy: Policy,
    ) -> Result<(KeyStore, KeyWatch), BrokerError> {
        let admin_hashes = keys::parse_admin_keys(&cfg.api.auth.admin_keys.0).map_err(|e| {
            BrokerError::with_kind(BrokerErrorKind::Other, "reading api.auth.admin_keys", e)
        })?;
        let admins = admin_hashes
            .into_iter()
            .map(|hash| {
                let principal = Principal {
                    key_id: keys::admin_key_id(hash),
                    role: Role::Admin,
                    tenant: None,
                };
                (hash, Arc::new(principal))
            })
            .collect();
        let bucket = Box::pin(setup::ensure_bucket(
            &broker.js,
            setup::api_keys_bucket(cfg),
        ))
        .await?;
        let (known, watch) = load(&bucket).await?;
        info!(keys = known.records.len(), "API keys loaded");
        let store = KeyStore(Arc::new(Inner {
            bucket,
            policy,
            admins,
            known: RwLock::new(known),
            open: Arc::new(Principal::open()),
        }));
        let watch = KeyWatch {
            store: store.clone(),
            watch,
        };
        Ok((store, watch))
    }

    pub fn policy(&self) -> Policy {
        self.0.policy
    }

    /// The principal of a presented key, or `None`. Memory only: nothing is read from
    /// NATS, whatever the key. This is the check a console sign-in uses on the key from
    /// its form or session cookie.
    pub fn check(&self, presented: &str) -> Option<Arc<Principal>> {
        if presented.is_empty() || presented.len() > keys::MAX_KEY_LEN {
            return None;
        }
        let hash = KeyHash::of(presented);
        if let Some(admin) = self.0.admins.get(&hash) {
            return Some(admin.clone());
        }
        self.read().by_hash.get(&hash).cloned()
    }

    /// Who a request is: the principal of its key; with no key, admin while the API is
    /// open, else refused. A presented key is always checked, open or not.
    pub fn authenticate(&self, presented: Option<&str>) -> Result<Arc<Principal>, Refusal> {
        match presented {
            Some(key) => self.check(key).ok_or(Refusal::Unknown),
            None if self.0.policy.is_open() => Ok(self.0.open.clone()),
            None => Err(Refusal::Missing),
        }
    }

    /// Makes a key and stores its record; the key is in the answer and nowhere else.
    pub async fn create(
        &self,
        tenant: TenantId,
        role: Role,
        name: Option<String>,
    ) -> Result<(KeyRecord, NewKey), BrokerError> {
        let key = NewKey::generate();
        let record = KeyRecord {
            id: format!("key_{}", ulid::Ulid::new().to_string().to_lowercase()),
            tenant,
            role,
            name,
            sha256: key.hash().to_hex(),
            created_at: Utc::now(),
        };
        let value = serde_json::to_vec(&record).expect("a key record serialises");
        self.0
            .bucket
            .create(&record.id, value.into())
            .await
            .map_err(|e| BrokerError::new("storing an API key", e))?;
        // Usable on this replica at once; the others learn it from their watch.
        self.write().insert(record.clone());
        Ok((record, key))
    }

    /// Every stored key's record, by id (oldest first: ids are ULIDs).
    pub fn list(&self) -> Vec<KeyRecord> {
        self.read().records.values().cloned().collect()
    }

    /// Deletes a key; `Ok(false)` when there is no key with that id. The bucket decides,
    /// not this replica's copy, so a key made a moment ago elsewhere can be deleted too.
    pub async fn delete(&self, id: &str) -> Result<bool, BrokerError> {
        let exists = self
            .0
            .bucket
            .entry(id)
            .await
            .map_err(|e| BrokerError::new("reading an API key", e))?
            .is_some_and(|e| e.operation == Operation::Put);
        if exists {
            self.0
                .bucket
                .purge(id)
                .await
                .map_err(|e| BrokerError::new("deleting an API key", e))?;
        }
        let removed_here = self.write().remove(id);
        Ok(exists || removed_here)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        // A panic while holding the lock cannot leave the maps half-changed (each change
        // is one insert or remove), so a poisoned lock is still usable.
        self.0.known.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Known> {
        self.0.known.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every key in the bucket, and the watch that goes on after them.
async fn load(bucket: &kv::Store) -> Result<(Known, BucketWatch), BrokerError> {
    let (mut watch, opened) = BucketWatch::open(bucket.clone(), "API keys").await?;
    let known = history(&mut watch, opened).await?;
    Ok((known, watch))
}

/// The keys of a watch's history, read until it has caught up (10 s at most).
async fn history(watch: &mut BucketWatch, mut opened: Opened) -> Result<Known, BrokerError> {
    let unavailable =
        |why| BrokerError::with_kind(BrokerErrorKind::Unavailable, "loading API keys", why);
    // Bounded by the timeout below, not by shutdown.
    let never = CancellationToken::new();
    let mut known = Known::default();
    loop {
        if opened.empty {
            return Ok(known);
        }
        match tokio::time::timeout(Duration::from_secs(10), watch.next(&never)).await {
            Ok(Some(Change::Entry(entry))) => {
                let caught_up = entry.delta == 0;
                apply(&mut known, entry);
                if caught_up {
                    return Ok(known);
                }
            }
            // Ended and reopened half-way: start over from its new history.
            Ok(Some(Change::Reopened(again))) => {
                known = Known::default();
                opened = again;
            }
            Ok(None) => return Err(unavailable("the watch ended")),
            Err(_) => return Err(unavailable("no answer within 10 s")),
        }
    }
}

fn apply(known: &mut Known, entry: Entry) {
    match entry.operation {
        Operation::Put => match serde_json::from_slice::<KeyRecord>(&entry.value) {
            Ok(record) if record.id == entry.key => known.insert(record),
            Ok(_) | Err(_) => warn!(key = %entry.key, "unreadable API key record ignored"),
        },
        Operation::Delete | Operation::Purge => {
            known.remove(&entry.key);
        }
    }
}

/// Keeps a [`KeyStore`] equal to the bucket. Run it on the app's task tracker.
pub struct KeyWatch {
    store: KeyStore,
    watch: BucketWatch,
}

impl KeyWatch {
    pub async fn run(mut self, token: CancellationToken) {
        while let Some(change) = self.watch.next(&token).await {
            match change {
                Change::Entry(entry) => {
                    let id = entry.key.clone();
                    let deleted = entry.operation != Operation::Put;
                    apply(&mut self.store.write(), entry);
                    if deleted {
                        info!(key_id = %id, "API key revoked on this replica");
                    }
                }
                Change::Reopened(opened) => {
                    if !self.reload(opened, &token).await {
                        return;
                    }
                }
            }
        }
    }

    /// Rebuilds the map from the reopened watch's history: deletions made while the
    /// watch was down are not replayed as changes, so the map is rebuilt rather than
    /// patched. `false` once cancelled.
    async fn reload(&mut self, mut opened: Opened, token: &CancellationToken) -> bool {
        warn!("API key watch reopened; reloading the keys");
        loop {
            match history(&mut self.watch, opened).await {
                Ok(known) => {
                    *self.store.write() = known;
                    return true;
                }
                Err(e) => {
                    warn!(error = %e, "API keys not reloaded yet");
                    match self.watch.reopen(token).await {
                        Some(again) => opened = again,
                        None => return false,
                    }
                }
            }
        }
    }
}
