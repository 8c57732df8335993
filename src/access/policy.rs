//! Open or not, decided once at start: an API nobody configured a key for must not be
//! reachable from the network by accident.
//!
//! | admin keys | `api.auth.mode` | listen address | the API |
//! |---|---|---|---|
//! | some | `keys` | any | keys required |
//! | none | `keys` | loopback | open (one warning) |
//! | none | `keys` | other | refuses to start |
//! | any | `off` | any | open (one warning) |
//!
//! Open means a request without a key acts as admin; a request that does present a key
//! is still held to that key (an unknown one is refused, a tenant key is scoped).

use std::net::SocketAddr;

use crate::config::{AuthConfig, AuthMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Every `/v1` request needs a valid key.
    Keys,
    /// Requests without a key act as admin.
    Open,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to start: the API would listen on {0} with no admin API key, open to anyone \
     who can reach it. Set HOOKSTREAM_ADMIN_API_KEYS (or api.auth.admin_keys; a \
     `sha256:<hex>` entry keeps the key itself out of the config), listen on a loopback \
     address, or set api.auth.mode = \"off\" to run it open on purpose"
)]
pub struct PolicyError(pub SocketAddr);

impl Policy {
    pub fn decide(auth: &AuthConfig, listen: SocketAddr) -> Result<Self, PolicyError> {
        match auth.mode {
            AuthMode::Off => Ok(Self::Open),
            AuthMode::Keys if !auth.admin_keys.0.is_empty() => Ok(Self::Keys),
            AuthMode::Keys if listen.ip().is_loopback() => Ok(Self::Open),
            AuthMode::Keys => Err(PolicyError(listen)),
        }
    }

    pub fn is_open(self) -> bool {
        self == Self::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdminKeys;

    fn auth(mode: AuthMode, keys: &[&str]) -> AuthConfig {
        AuthConfig {
            mode,
            admin_keys: AdminKeys(keys.iter().map(|k| k.to_string()).collect()),
            protect_metrics: false,
        }
    }

    #[test]
    fn open_only_on_loopback_or_when_asked() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let local6: SocketAddr = "[::1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let key = ["an-admin-key-long-enough"];
        assert_eq!(
            Policy::decide(&auth(AuthMode::Keys, &[]), local).unwrap(),
            Policy::Open
        );
        assert_eq!(
            Policy::decide(&auth(AuthMode::Keys, &[]), local6).unwrap(),
            Policy::Open
        );
        let refused = Policy::decide(&auth(AuthMode::Keys, &[]), any)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("HOOKSTREAM_ADMIN_API_KEYS"), "{refused}");
        assert!(refused.contains("api.auth.mode = \"off\""), "{refused}");
        assert_eq!(
            Policy::decide(&auth(AuthMode::Keys, &key), any).unwrap(),
            Policy::Keys
        );
        assert_eq!(
            Policy::decide(&auth(AuthMode::Keys, &key), local).unwrap(),
            Policy::Keys
        );
        assert_eq!(
            Policy::decide(&auth(AuthMode::Off, &[]), any).unwrap(),
            Policy::Open
        );
    }
}
