//! The API's one access check: [`guard`], a layer on the whole router, and [`Access`],
//! the extractor through which handlers get their tenant scope.
//!
//! - `guard` runs for every `/v1` path (and `/metrics` when `api.auth.protect_metrics`),
//!   routed or not: the bearer key becomes a [`Principal`] (401 `unauthorized` with
//!   `WWW-Authenticate: Bearer` when there is none or it is unknown), and the role is
//!   checked against [`PERMISSIONS`], the one table of what each role may use (403
//!   `forbidden`). Both answers go through the request metrics like any other.
//! - A handler takes [`Access`] to learn whose request it is: [`Access::scope`] turns the
//!   tenant a body or query names into the tenant to act on (a tenant key's own by
//!   default, another one 403), and [`Access::owns`] tells whether a thing found by id is
//!   the key's to see (not: answer 404, as for an id that does not exist).
//! - A route cannot forget this: `guard` sees whether the handler took `Access`, and a
//!   success answered to a tenant or ingest key by a handler that did not is replaced by
//!   a 500 and an error log naming the route (the integration tests run every route with
//!   a tenant key, so such a route fails them).
//!
//! The key itself is never logged: only its id (`key_…`, `admin_<hash prefix>`, `open`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{error, info};

use super::AppState;
use super::error::ApiError;
use crate::access::Refusal;
use crate::access::{Principal, Role};
use crate::model::TenantId;

/// The least a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any key: admin, tenant or ingest.
    Ingest,
    /// Admin or tenant.
    Tenant,
    /// Admin only.
    Admin,
}

impl Need {
    fn allows(self, role: Role) -> bool {
        match self {
            Need::Ingest => true,
            Need::Tenant => role != Role::Ingest,
            Need::Admin => role == Role::Admin,
        }
    }
}

/// What each role may use: (method or `*`, route template, need). Every guarded route
/// that is not listed needs [`Need::Tenant`], so a new route is closed to ingest keys
/// until it is listed here.
pub const PERMISSIONS: &[(&str, &str, Need)] = &[
    ("POST", "/v1/events", Need::Ingest),
    ("POST", "/v1/events/batch", Need::Ingest),
    ("*", "/v1/api-keys", Need::Admin),
    ("*", "/v1/api-keys/{id}", Need::Admin),
    ("*", "/metrics", Need::Admin),
];

pub fn need(method: &Method, route: &str) -> Need {
    PERMISSIONS
        .iter()
        .find(|(m, r, _)| *r == route && (*m == "*" || *m == method.as_str()))
        .map_or(Need::Tenant, |(_, _, need)| *need)
}

/// Whether a path is behind the guard.
fn is_guarded(path: &str, protect_metrics: bool) -> bool {
    path == "/v1" || path.starts_with("/v1/") || (protect_metrics && path == "/metrics")
}

/// What `guard` hands to the handler's [`Access`].
#[derive(Clone)]
struct Granted {
    principal: Arc<Principal>,
    /// Set when the handler takes `Access`.
    taken: Arc<AtomicBool>,
}

/// The bearer key of a request: `Ok(None)` when there is no `Authorization` header, an
/// error when there is one that is not `Bearer <key>`.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let refused = || ApiError::Unauthorized("expected Authorization: Bearer <API key>".into());
    let text = value.to_str().map_err(|_| refused())?;
    let (scheme, key) = text.split_once(' ').ok_or_else(refused)?;
    if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
        return Err(refused());
    }
    Ok(Some(key.trim()))
}

fn refusal(r: Refusal) -> ApiError {
    ApiError::Unauthorized(match r {
        Refusal::Missing => "this route needs Authorization: Bearer <API key>".into(),
        Refusal::Unknown => "the API key is not valid (unknown or deleted)".into(),
    })
}

/// The layer of a router without [`super::edge`] (a worker's health routes): [`check`].
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    check(&state, route.as_ref().map(MatchedPath::as_str), req, next).await
}

/// Authenticate, check the role, and hold the handler to taking [`Access`]. `route` is the
/// matched route template, `None` for an unmatched path.
pub async fn check(
    state: &AppState,
    route: Option<&str>,
    mut req: Request,
    next: Next,
) -> Response {
    if !is_guarded(req.uri().path(), state.cfg.api.auth.protect_metrics) {
        return next.run(req).await;
    }
    let principal = match bearer(req.headers()).map(|key| state.keys.authenticate(key)) {
        Ok(Ok(principal)) => principal,
        Ok(Err(r)) => return refusal(r).into_response(),
        Err(e) => return e.into_response(),
    };
    // An unmatched path is answered 404 by the fallback, whoever asks.
    if let Some(route) = route
        && !need(req.method(), route).allows(principal.role)
    {
        return ApiError::Forbidden(format!(
            "a key of role {} may not use {} {route}",
            principal.role.as_str(),
            req.method()
        ))
        .into_response();
    }
    let taken = Arc::new(AtomicBool::new(false));
    req.extensions_mut().insert(Granted {
        principal: principal.clone(),
        taken: taken.clone(),
    });
    let response = next.run(req).await;
    if let Some(route) = route
        && !principal.is_admin()
        && response.status().is_success()
        && !taken.load(Ordering::Acquire)
    {
        error!(%route, "a route answered a tenant key without taking Access; answer withheld");
        return ApiError::Internal(format!("route {route} does not check access").into())
            .into_response();
    }
    response
}

/// Whose request this is. Every `/v1` handler takes it: it is how the handler learns the
/// tenant it may act on. Rejected with a 500 on a route outside [`guard`].
#[derive(Clone)]
pub struct Access {
    principal: Arc<Principal>,
}

impl<S: Send + Sync> FromRequestParts<S> for Access {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let granted = parts.extensions.get::<Granted>().ok_or_else(|| {
            ApiError::Internal("Access taken on a route outside the access guard".into())
        })?;
        granted.taken.store(true, Ordering::Release);
        Ok(Self {
            principal: granted.principal.clone(),
        })
    }
}

impl Access {
    /// For callers outside a request (a console page that checked a cookie itself).
    pub fn new(principal: Arc<Principal>) -> Self {
        Self { principal }
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn role(&self) -> Role {
        self.principal.role
    }

    pub fn key_id(&self) -> &str {
        &self.principal.key_id
    }

    /// The key's own tenant; `None` for an admin, who acts on every tenant.
    pub fn tenant(&self) -> Option<&TenantId> {
        self.principal.tenant.as_ref()
    }

    /// The tenant a request acts on, given the one its body or query names: an admin
    /// gets what it named (`None`: every tenant, or the default for something new); a
    /// tenant or ingest key gets its own, and naming another is 403 `forbidden`.
    pub fn scope(&self, requested: Option<TenantId>) -> Result<Option<TenantId>, ApiError> {
        match (&self.principal.tenant, requested) {
            (None, requested) => Ok(requested),
            (Some(own), None) => Ok(Some(own.clone())),
            (Some(own), Some(asked)) if &asked == own => Ok(Some(asked)),
            (Some(own), Some(asked)) => Err(ApiError::Forbidden(format!(
                "this key belongs to tenant {own}; it cannot act on tenant {asked}"
            ))),
        }
    }

    /// [`Access::scope`] for a tenant given as text (a query parameter): a bad name is 400.
    pub fn scope_text(&self, requested: Option<&str>) -> Result<Option<TenantId>, ApiError> {
        let parsed = requested
            .map(TenantId::parse)
            .transpose()
            .map_err(|e| ApiError::Invalid(e.to_string()))?;
        self.scope(parsed)
    }

    /// Whether something of `tenant` is this key's to see. Callers answer `false` with
    /// the same 404 as for an id that does not exist, so an id of another tenant tells
    /// nothing.
    pub fn owns(&self, tenant: &str) -> bool {
        self.principal
            .tenant
            .as_ref()
            .is_none_or(|own| own.as_str() == tenant)
    }

    /// One audit line for a change: who (key id and role, never the key), on which tenant,
    /// what, to which target.
    pub fn audit(&self, action: &'static str, tenant: &str, target: &str) {
        info!(
            target: "hookstream::audit",
            key_id = %self.principal.key_id,
            role = self.principal.role.as_str(),
            tenant,
            action,
            target,
            "audit"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_ingest_and_admin_routes_and_closes_the_rest_to_ingest() {
        assert_eq!(need(&Method::POST, "/v1/events"), Need::Ingest);
        assert_eq!(need(&Method::GET, "/v1/events/{id}"), Need::Tenant);
        assert_eq!(need(&Method::DELETE, "/v1/api-keys/{id}"), Need::Admin);
        assert_eq!(need(&Method::GET, "/v1/some-new-route"), Need::Tenant);
        assert!(!Need::Tenant.allows(Role::Ingest));
        assert!(Need::Tenant.allows(Role::Tenant));
        assert!(!Need::Admin.allows(Role::Tenant));
        assert!(is_guarded("/v1/anything", false));
        assert!(!is_guarded("/healthz", true));
        assert!(!is_guarded("/metrics", false) && is_guarded("/metrics", true));
        assert!(!is_guarded("/v10", false));
    }

    #[test]
    fn a_tenant_key_is_held_to_its_tenant() {
        let acme = TenantId::parse("acme").unwrap();
        let other = TenantId::parse("other").unwrap();
        let tenant = Access::new(Arc::new(Principal {
            key_id: "key_1".into(),
            role: Role::Tenant,
            tenant: Some(acme.clone()),
        }));
        assert_eq!(tenant.scope(None).unwrap(), Some(acme.clone()));
        assert_eq!(
            tenant.scope(Some(acme.clone())).unwrap(),
            Some(acme.clone())
        );
        assert_eq!(
            tenant.scope(Some(other.clone())).unwrap_err().code(),
            "forbidden"
        );
        assert!(tenant.owns("acme") && !tenant.owns("other"));
        let admin = Access::new(Arc::new(Principal::open()));
        assert_eq!(admin.scope(None).unwrap(), None);
        assert_eq!(admin.scope(Some(other.clone())).unwrap(), Some(other));
        assert!(admin.owns("anything"));
        assert_eq!(
            tenant.scope_text(Some("BAD!")).unwrap_err().code(),
            "invalid_request"
        );
    }

    #[test]
    fn only_bearer_keys_are_read() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers).unwrap(), None);
        headers.insert(header::AUTHORIZATION, "Bearer hsk_abc".parse().unwrap());
        assert_eq!(bearer(&headers).unwrap(), Some("hsk_abc"));
        headers.insert(header::AUTHORIZATION, "bearer  hsk_abc ".parse().unwrap());
        assert_eq!(bearer(&headers).unwrap(), Some("hsk_abc"));
        headers.insert(header::AUTHORIZATION, "Basic dXNlcjpwYXNz".parse().unwrap());
        assert_eq!(bearer(&headers).unwrap_err().code(), "unauthorized");
    }
}
