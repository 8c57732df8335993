//! Console sessions and CSRF tokens (docs/adr/0012).
//!
//! The session cookie `hs_console` holds the API key the user signed in with:
//! `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page sends it),
//! `Secure` when the request came over TLS or through a proxy saying
//! `X-Forwarded-Proto: https`, `Path=/console`. Every request checks the key again
//! through [`principal_of`], which asks the API's key store (`access`), so a deleted key
//! ends its sessions on every replica as fast as its API use, and no session store is
//! needed.
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
use crate::access::Role;
use crate::api::AppState;
use crate::api::access::Access;
use crate::model::TenantId;

pub const COOKIE: &str = "hs_console";
/// The session value while the API runs open (no keys configured).
const OPEN: &str = "open";

/// Who is looking: the API's [`Access`] of the session's key (the same `scope` and
/// `owns` as every `/v1` route), and this session's CSRF token for the page's forms.
#[derive(Clone)]
pub struct Viewer {
    pub access: Access,
    pub csrf: String,
}

impl Viewer {
    pub fn key_id(&self) -> &str {
        self.access.key_id()
    }

    /// `None`: an admin, who sees every tenant.
    pub fn tenant(&self) -> Option<&TenantId> {
        self.access.tenant()
    }

    /// The tenant to act on for a form naming `requested` (400 for a bad name, 403 for
    /// another tenant): the API's own [`Access::scope_text`].
    pub fn scope(&self, requested: Option<&str>) -> Result<Option<TenantId>, ConsoleError> {
        Ok(self.access.scope_text(requested)?)
    }

    /// Whether a thing of `tenant` found by id is the viewer's to see (not: 404).
    pub fn owns(&self, tenant: &str) -> bool {
        self.access.owns(tenant)
    }

    pub fn is_admin(&self) -> bool {
        self.access.role() == Role::Admin
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

/// The one access check of the console: the principal of a session value, through the
/// API's key store (the open session only while the API runs without keys). An ingest
/// key may only send events: 403, as on the API's read routes.
pub fn principal_of(state: &AppState, session: &str) -> Result<Viewer, ConsoleError> {
    let presented = (session != OPEN).then_some(session);
    let principal = state.keys.authenticate(presented).map_err(|_| {
        ConsoleError::Unauthorized("the API key is not valid (unknown or deleted)".into())
    })?;
    if principal.role == Role::Ingest {
        return Err(ConsoleError::Forbidden(
            "an ingest key may only send events; sign in with a tenant or admin key".into(),
        ));
    }
    Ok(Viewer {
        access: Access::new(principal),
        csrf: csrf_of(session),
    })
}

/// What the sign-in form turns into a session value: the key as typed, or the open
/// session (an empty key) while the API runs without keys.
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

    fn viewer(tenant: Option<&str>, csrf: String) -> Viewer {
        Viewer {
            access: Access::new(std::sync::Arc::new(crate::access::Principal {
                key_id: "key_1".into(),
                role: if tenant.is_some() {
                    Role::Tenant
                } else {
                    Role::Admin
                },
                tenant: tenant.map(|t| TenantId::parse(t).unwrap()),
            })),
            csrf,
        }
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_check_exactly() {
        let a = csrf_of("hsk_a");
        assert_eq!(a.len(), 64);
        assert_ne!(a, csrf_of("hsk_b"));
        let viewer = viewer(None, a.clone());
        assert!(viewer.check_csrf(&a).is_ok());
        assert!(viewer.check_csrf(&csrf_of("hsk_b")).is_err());
        assert!(viewer.check_csrf("").is_err());
    }

    #[test]
    fn a_tenant_viewer_is_held_to_its_tenant() {
        let acme = TenantId::parse("acme").unwrap();
        let viewer = viewer(Some("acme"), String::new());
        assert_eq!(viewer.scope(None).unwrap(), Some(acme.clone()));
        assert!(viewer.scope(Some("globex")).is_err());
        assert!(viewer.owns("acme") && !viewer.owns("globex"));
        assert!(!viewer.is_admin());
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
