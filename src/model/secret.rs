//! Signing secrets (`whsec_<base64>`): generated, parsed, and kept out of logs.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "whsec_";

/// The key bytes of a Standard Webhooks secret. `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(Vec<u8>);

impl SecretKey {
    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// Accepts `whsec_<base64>` with a key of 24 to 64 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| "secret must look like whsec_<base64>".to_string())?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "secret after whsec_ must be standard base64".to_string())?;
        if !(24..=64).contains(&key.len()) {
            return Err("secret key must be 24 to 64 bytes".to_string());
        }
        Ok(Self(key))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The `whsec_…` text, for the one answer that shows it.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for SecretKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expose())
    }
}

impl<'de> Deserialize<'de> for SecretKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// One secret of a destination; during a rotation the old one signs until `expires_at`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSecret {
    pub key: SecretKey,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl SigningSecret {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_round_trips_and_never_debug_prints() {
        let key = SecretKey::generate();
        let text = key.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(SecretKey::parse(&text).unwrap(), key);
        assert_eq!(format!("{key:?}"), "[redacted]");
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert!(SecretKey::parse("abc").is_err());
        assert!(SecretKey::parse("whsec_!!!").is_err());
        assert!(SecretKey::parse("whsec_YWJj").is_err()); // 3 bytes
    }
}
