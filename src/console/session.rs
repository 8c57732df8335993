//! Console sessions and CSRF tokens (docs/adr/0012).
//!
//! The session cookie `hs_console` holds the API key the user signed in with:
//! `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page sends it),
//! `Secure` when the request came over TLS or through a proxy saying
//! `X-Forwarded-Proto: https`, `Path=/console`. Every request checks the key again
//! through [`principal_of`], the one place the console asks who someone is, so a deleted
//! key ends its sessions on every replica at once and no session store is needed.
//!
//! A form carries a CSRF token: the HMAC-SHA256 of a fixed label under the session's
//! key. Only the holder of the cookie can know it (the cookie is unreadable to scripts
//! and never sent cross-site), it needs no storage, and it differs for every key.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::ConsoleError;
use crate::api::AppState;
use crate::model::TenantId;

pub const COOKIE: &str = "hs_console";
/// The session value while the API runs open (no keys configured).
const OPEN: &str = "open";

/// Who is looking: the key's id (never the key) and, for a tenant key, its tenant.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub key_id: String,
    /// `None`: an admin, who sees every tenant.
    pub tenant: Option<TenantId>,
    /// This session's CSRF token, for the forms of the page.
    pub csrf: String,
}

impl Viewer {
    /// The tenant to act on for a request naming `requested`: a tenant key's own (another
    /// one is refused, 403), or what an admin asked for (`None`: every tenant).
    pub fn scope(&self, requested: Option<TenantId>) -> Result<Option<TenantId>, ConsoleError> {
        match (&self.tenant, requested) {
            (None, requested) => Ok(requested),
            (Some(own), None) => Ok(Some(own.clone())),
            (Some(own), Some(r)) if &r == own => Ok(Some(r)),
            (Some(_), Some(_)) => Err(ConsoleError::Forbidden(
                "this key may only see its own tenant".into(),
            )),
        }
    }

    /// Whether a thing of `tenant` found by id is the viewer's to see (not: 404).
    pub fn owns(&self, tenant: &str) -> bool {
        self.tenant.as_ref().is_none_or(|t| t.as_str() == tenant)
    }

    pub fn is_admin(&self) -> bool {
        self.tenant.is_none()
    }

    /// Refuses a form whose token is not this session's.
    pub fn check_csrf(&self, token: &str) -> Result<(), ConsoleError> {
        // Both are hex of the same length; compare without an early exit.
        let same = token.len() == self.csrf.len()
            && token
                .bytes()
                .zip(self.csrf.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(
                "the form's CSRF token is missing or wrong; reload the page".into(),
            ))
        }
    }
}

/// The CSRF token of a session value.
fn csrf_of(session: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(session.as_bytes()).expect("HMAC takes keys of any size");
    mac.update(b"hookstream console csrf v1");
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The one access check of the console: the principal of a session value. The API
/// runs open (no key configured) on this branch, so every session is the open admin;
/// any other value is refused like an unknown key.
pub fn principal_of(_state: &AppState, session: &str) -> Result<Viewer, ConsoleError> {
    if session == OPEN {
        return Ok(Viewer {
            key_id: "open".into(),
            tenant: None,
            csrf: csrf_of(session),
        });
    }
    Err(ConsoleError::Unauthorized(
        "the API key is not valid (unknown or deleted)".into(),
    ))
}

/// What the sign-in form turns into a session value: the key as typed, or the open
/// session while the API runs without keys.
pub fn session_for_key(state: &AppState, key: &str) -> Result<String, ConsoleError> {
    let key = key.trim();
    let session = if key.is_empty() { OPEN } else { key };
    principal_of(state, session).map(|_| session.to_string())
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// Whether the browser reached us over TLS (directly or through a proxy that says so).
fn is_https(parts_headers: &HeaderMap, scheme: Option<&str>) -> bool {
    scheme == Some("https")
        || parts_headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// `Set-Cookie` for a new session (`Some`) or its end (`None`).
pub fn set_cookie(headers: &HeaderMap, session: Option<&str>) -> HeaderValue {
    let secure = if is_https(headers, None) {
        "; Secure"
    } else {
        ""
    };
    let text = match session {
        Some(value) => {
            format!("{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict{secure}")
        }
        None => format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&text).expect("cookie text is visible ASCII")
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session = cookie_value(&parts.headers).ok_or_else(|| {
            ConsoleError::Unauthorized("sign in with an API key to use the console".into())
        })?;
        principal_of(state, &session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_differ_per_session_and_check_exactly() {
        let a = csrf_of("hsk_a");
        assert_eq!(a.len(), 64);
        assert_ne!(a, csrf_of("hsk_b"));
        let viewer = Viewer {
            key_id: "k".into(),
            tenant: None,
            csrf: a.clone(),
        };
        assert!(viewer.check_csrf(&a).is_ok());
        assert!(viewer.check_csrf(&csrf_of("hsk_b")).is_err());
        assert!(viewer.check_csrf("").is_err());
    }

    #[test]
    fn a_tenant_viewer_is_held_to_its_tenant() {
        let acme = TenantId::parse("acme").unwrap();
        let viewer = Viewer {
            key_id: "k".into(),
            tenant: Some(acme.clone()),
            csrf: String::new(),
        };
        assert_eq!(viewer.scope(None).unwrap(), Some(acme.clone()));
        assert!(
            viewer
                .scope(Some(TenantId::parse("globex").unwrap()))
                .is_err()
        );
        assert!(viewer.owns("acme") && !viewer.owns("globex"));
    }

    #[test]
    fn session_cookie_is_http_only_strict_and_secure_behind_tls() {
        let plain = set_cookie(&HeaderMap::new(), Some("hsk_x"));
        let plain = plain.to_str().unwrap();
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        let mut proxied = HeaderMap::new();
        proxied.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(
            set_cookie(&proxied, Some("hsk_x"))
                .to_str()
                .unwrap()
                .contains("; Secure")
        );
    }
}
