//! Who may do what: API keys, their roles and tenants (docs/adr/0009).
//!
//! - [`keys`]: making a key (`hsk_…`, 256 random bits), hashing one (SHA-256), reading the
//!   configured admin keys (`sha256:<hex>` entries are hashes).
//! - [`store`]: [`KeyStore`], every valid key as a hash in memory: the admin keys of the
//!   config, and the tenant and ingest keys of KV `hs_api_keys`, kept current by a watch
//!   on every replica. A check is a hash and a map look-up, never a NATS round trip.
//! - [`policy`]: open mode or keys, decided once at start from the config and the listen
//!   address (no admin key and not loopback: refuse to start).
//!
//! Nothing here knows HTTP: the API's layer and its `Access` extractor
//! (`api/access.rs`) are built on [`KeyStore::check`], and so can a console sign-in.
//! A key is never stored, logged or shown after its creation: only its hash is kept.

pub mod keys;
pub mod policy;
pub mod store;

use serde::{Deserialize, Serialize};

use crate::model::TenantId;

pub use keys::{KeyHash, NewKey};
pub use policy::{Policy, PolicyError};
pub use store::{KeyRecord, KeyStore, KeyWatch, Refusal};

/// What a key may do. `admin`: every tenant and the key routes; `tenant`: everything of
/// its tenant; `ingest`: only `POST /v1/events` and `/v1/events/batch` of its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Tenant,
    Ingest,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Tenant => "tenant",
            Self::Ingest => "ingest",
        }
    }
}

/// Who is asking: the key's id (never the key), its role, and for tenant and ingest
/// keys their tenant. Admins have no tenant: they act on every one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `key_<ulid>` for stored keys, `admin_<hash prefix>` for configured admin keys,
    /// `open` when the API runs without keys.
    pub key_id: String,
    pub role: Role,
    /// `Some` exactly when `role` is not `Admin`.
    pub tenant: Option<TenantId>,
}

impl Principal {
    /// The principal of every request while the API is open (no admin key configured).
    pub fn open() -> Self {
        Self {
            key_id: "open".into(),
            role: Role::Admin,
            tenant: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}
