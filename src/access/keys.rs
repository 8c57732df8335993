//! API keys as values: making one, hashing one, and reading the configured admin keys.
//!
//! A key is `hsk_` followed by 32 bytes from the operating system's random source in
//! unpadded base64url (43 characters): 256 bits, so a key cannot be guessed and a plain
//! SHA-256 (no salt, no slow hash) is enough to keep it: there is no dictionary of keys
//! to try, and a check stays one hash and one map look-up.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore;
use sha2::{Digest, Sha256};

/// The prefix of every key hookstream makes (secret scanners can look for it).
pub const KEY_PREFIX: &str = "hsk_";
/// Configured admin keys shorter than this are refused: they could be guessed.
pub const MIN_ADMIN_KEY_LEN: usize = 16;
/// A presented key longer than this is not one (nothing is hashed for it).
pub const MAX_KEY_LEN: usize = 512;
/// The prefix of a configured admin key given as its hash.
pub const HASH_PREFIX: &str = "sha256:";

/// The SHA-256 of a key: what is stored, compared and (as a prefix) shown in ids.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", &self.to_hex()[..12])
    }
}

/// A freshly made key: shown once, in the answer to its creation; `Debug` hides it.
pub struct NewKey(String);

impl NewKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .expect("the operating system's random source is readable");
        Self(format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    /// The key itself, for the one answer that shows it.
    pub fn expose(self) -> String {
        self.0
    }
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewKey([redacted])")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminKeyError {
    #[error("entry {0} is `sha256:` followed by something that is not 64 hex digits")]
    BadHash(usize),
    #[error(
        "entry {0} is shorter than {MIN_ADMIN_KEY_LEN} characters; use a long random key \
         (e.g. `openssl rand -base64 32`) or its `sha256:<hex>`"
    )]
    TooShort(usize),
    #[error("entry {0} is longer than {MAX_KEY_LEN} characters")]
    TooLong(usize),
}

/// The hashes of the configured admin keys (entries counted from 1 in errors, which
/// never repeat the entry itself).
pub fn parse_admin_keys(entries: &[String]) -> Result<Vec<KeyHash>, AdminKeyError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let n = i + 1;
            let entry = entry.trim();
            if let Some(hex) = entry.strip_prefix(HASH_PREFIX) {
                return KeyHash::from_hex(&hex.to_ascii_lowercase())
                    .ok_or(AdminKeyError::BadHash(n));
            }
            if entry.len() < MIN_ADMIN_KEY_LEN {
                return Err(AdminKeyError::TooShort(n));
            }
            if entry.len() > MAX_KEY_LEN {
                return Err(AdminKeyError::TooLong(n));
            }
            Ok(KeyHash::of(entry))
        })
        .collect()
}

/// The id an admin key from the config is known by in logs: a prefix of its hash, which
/// tells keys apart without helping anyone find one.
pub fn admin_key_id(hash: KeyHash) -> String {
    format!("admin_{}", &hash.to_hex()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_has_256_random_bits_and_its_hash_round_trips() {
        let a = NewKey::generate();
        let b = NewKey::generate();
        let (ha, hb) = (a.hash(), b.hash());
        assert_ne!(ha, hb);
        assert_eq!(KeyHash::from_hex(&ha.to_hex()), Some(ha));
        let text = a.expose();
        assert!(text.starts_with(KEY_PREFIX));
        let raw = URL_SAFE_NO_PAD
            .decode(&text[KEY_PREFIX.len()..])
            .expect("base64url");
        assert_eq!(raw.len(), 32);
        assert_eq!(KeyHash::of(&text), ha);
        assert!(!format!("{b:?}").contains(KEY_PREFIX));
    }

    #[test]
    fn admin_keys_are_keys_or_their_hashes() {
        let key = "an-admin-key-that-is-long-enough";
        let hash = KeyHash::of(key);
        let parsed = parse_admin_keys(&[
            key.to_string(),
            format!("sha256:{}", hash.to_hex().to_uppercase()),
        ])
        .unwrap();
        assert_eq!(parsed, vec![hash, hash]);
        assert_eq!(
            parse_admin_keys(&["short".into()]),
            Err(AdminKeyError::TooShort(1))
        );
        let err = parse_admin_keys(&[key.into(), "sha256:abc".into()]).unwrap_err();
        assert_eq!(err, AdminKeyError::BadHash(2));
        assert!(!err.to_string().contains("abc"));
        assert!(KeyHash::from_hex(&"zz".repeat(32)).is_none());
    }
}
