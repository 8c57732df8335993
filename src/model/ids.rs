//! Validated identifiers. Each one is checked once, at the edge (API or stream message),
//! so that everything inside can put it into a NATS subject or KV key without escaping.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Why an identifier was refused; the message names the rule so an API client can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is invalid: {rule}")]
pub struct InvalidId {
    pub what: &'static str,
    pub value: String,
    pub rule: &'static str,
}

fn check(
    what: &'static str,
    value: &str,
    max: usize,
    allowed: fn(u8) -> bool,
    rule: &'static str,
) -> Result<(), InvalidId> {
    if value.is_empty() || value.len() > max || !value.bytes().all(allowed) {
        return Err(InvalidId {
            what,
            value: value.chars().take(80).collect(),
            rule,
        });
    }
    Ok(())
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal, $allowed:expr, $rule:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                check($what, &value, $max, $allowed, $rule)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A tenant: an isolated customer space. `default` when none is given.
    TenantId, "tenant", 64,
    |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-',
    "1 to 64 characters of [a-z0-9_-]"
);

id_type!(
    /// A destination id; it becomes a subject token and part of a consumer name.
    DestinationId, "destination id", 64, is_token_byte,
    "1 to 64 characters of [A-Za-z0-9_-]"
);

id_type!(
    /// An event id; it is the `webhook-id`, the `Nats-Msg-Id` and a subject token.
    EventId, "event id", 128, is_token_byte,
    "1 to 128 characters of [A-Za-z0-9_-]"
);

impl TenantId {
    pub fn default_tenant() -> Self {
        Self("default".to_string())
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self::default_tenant()
    }
}

impl EventId {
    /// A new, time-ordered event id.
    pub fn generate() -> Self {
        Self(format!("evt_{}", ulid::Ulid::new()))
    }

    /// When an id of the [`EventId::generate`] shape was drawn (a ULID's first 48 bits
    /// are its milliseconds); `None` for any other id. A client may send an id of this
    /// shape too: the answer is then its own ULID's time.
    pub fn drawn_at(&self) -> Option<std::time::SystemTime> {
        let ulid = self.0.strip_prefix("evt_")?;
        ulid::Ulid::from_string(ulid).ok().map(|u| u.datetime())
    }

    /// The event id that an `Idempotency-Key` stands for. Deriving it (instead of drawing a
    /// fresh one) makes two concurrent requests with the same key publish the same
    /// `Nats-Msg-Id`, so JetStream's duplicate window catches the race the KV look-up cannot.
    pub fn from_idempotency_key(tenant: &TenantId, key: &str) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(tenant.as_str())
            .chain_update([0u8])
            .chain_update(key)
            .finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("evt_{hex}"))
    }
}

impl DestinationId {
    pub fn generate() -> Self {
        Self(format!("dst_{}", ulid::Ulid::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_rejects_upper_case_and_dots() {
        assert!(TenantId::parse("acme-1_x").is_ok());
        assert!(TenantId::parse("Acme").is_err());
        assert!(TenantId::parse("a.b").is_err());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("a".repeat(65)).is_err());
    }

    #[test]
    fn ids_reject_subject_metacharacters() {
        for bad in ["a.b", "a*", ">", "a b", ""] {
            assert!(EventId::parse(bad).is_err(), "{bad}");
            assert!(DestinationId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn idempotency_key_maps_to_a_stable_id_per_tenant() {
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        let id1 = EventId::from_idempotency_key(&a, "k1");
        assert_eq!(id1, EventId::from_idempotency_key(&a, "k1"));
        assert_ne!(id1, EventId::from_idempotency_key(&b, "k1"));
        assert!(EventId::parse(id1.as_str()).is_ok());
    }

    #[test]
    fn a_drawn_id_tells_when_it_was_drawn_and_no_other_id_does() {
        let before = std::time::SystemTime::now() - std::time::Duration::from_millis(1);
        let drawn = EventId::generate()
            .drawn_at()
            .expect("a drawn id has a time");
        assert!(drawn >= before && drawn <= std::time::SystemTime::now());
        let keyed = EventId::from_idempotency_key(&TenantId::default(), "k");
        assert_eq!(keyed.drawn_at(), None);
        assert_eq!(EventId::parse("order-17").unwrap().drawn_at(), None);
    }
}
