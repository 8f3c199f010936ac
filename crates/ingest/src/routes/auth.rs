//! Who is calling, as extractors: [`Admin`] (the operator's
//! `SB_ADMIN_TOKEN`) and [`TenantKey`] (an API key of the path's `{tenant}`,
//! within the tenant's request rate). A handler that takes one runs only
//! for a caller it admits.

use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use switchboard_platform::Problem;
use switchboard_platform::api_error;
use switchboard_proto::TenantId;

use super::{ApiError, Invalid, repository_problem};
use crate::domain::secrets::{constant_time_eq, hash_key};
use crate::repository::RepositoryError;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the admin API is disabled: SB_ADMIN_TOKEN is not set on this ingest")]
    AdminDisabled,
    #[error("missing 'Authorization: Bearer <admin token>' header")]
    AdminMissing,
    #[error("admin token is not valid")]
    AdminInvalid,
    #[error(transparent)]
    Tenant(Invalid),
    #[error("missing 'Authorization: Bearer sk_…' header with the tenant's API key")]
    KeyMissing,
    #[error("API key is not valid or was revoked")]
    KeyInvalid,
    #[error("this API key does not belong to tenant '{0}'")]
    OtherTenant(TenantId),
    #[error("tenant '{tenant}' is over its http_rps limit; retry later")]
    RateLimited { tenant: TenantId, wait: Duration },
    #[error("looking up an API key failed")]
    Lookup(#[source] RepositoryError),
}

impl ApiError for AuthError {
    fn problem(&self) -> Option<Problem> {
        Some(match self {
            Self::AdminDisabled
            | Self::AdminMissing
            | Self::AdminInvalid
            | Self::KeyMissing
            | Self::KeyInvalid => Problem::unauthorized(self.to_string()),
            Self::Tenant(e) => e.into(),
            Self::OtherTenant(_) => Problem::forbidden(self.to_string()),
            Self::RateLimited { wait, .. } => {
                Problem::too_many_requests(self.to_string(), wait.as_secs_f64().ceil() as u64)
            }
            Self::Lookup(e) => return repository_problem(e),
        })
    }
}

api_error!(AuthError);

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn state(req: &HttpRequest) -> web::Data<AppState> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .expect("AppState is app data of every ingest route")
}

/// The operator: `Authorization: Bearer $SB_ADMIN_TOKEN`.
pub struct Admin;

impl FromRequest for Admin {
    type Error = AuthError;
    type Future = std::future::Ready<Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = state(req);
        let result = match (state.settings.admin_token.as_deref(), bearer(req)) {
            (None, _) => Err(AuthError::AdminDisabled),
            (Some(_), None) => Err(AuthError::AdminMissing),
            (Some(expected), Some(given))
                if constant_time_eq(given.as_bytes(), expected.as_bytes()) =>
            {
                Ok(Admin)
            }
            (Some(_), Some(_)) => Err(AuthError::AdminInvalid),
        };
        std::future::ready(result)
    }
}

/// A tenant's server: an API key of the path's `{tenant}`, within the
/// tenant's `http_rps` (over it, `429` with `Retry-After`). Owners of keys
/// come from [`switchboard_platform::apikeys`], which a revoke empties on every instance,
/// so a revoked key is refused at once.
pub struct TenantKey(pub TenantId);

impl std::ops::Deref for TenantKey {
    type Target = TenantId;
    fn deref(&self) -> &TenantId {
        &self.0
    }
}

impl std::fmt::Display for TenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl FromRequest for TenantKey {
    type Error = AuthError;
    type Future = LocalBoxFuture<'static, Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = state(req);
        let tenant = req
            .match_info()
            .get("tenant")
            .unwrap_or_default()
            .to_owned();
        let key = bearer(req).map(hash_key);
        Box::pin(async move { tenant_key(&state, &tenant, key).await.map(TenantKey) })
    }
}

async fn tenant_key(
    state: &AppState,
    tenant: &str,
    key_hash: Option<Vec<u8>>,
) -> Result<TenantId, AuthError> {
    let tenant = TenantId::parse(tenant)
        .map_err(|e| AuthError::Tenant(Invalid::new("tenant", format!("must match {}", e.rule))))?;
    let hash = key_hash.ok_or(AuthError::KeyMissing)?;
    let owner = match state.keys.get(&hash) {
        Some(owner) => owner,
        None => {
            let owner = state
                .repo
                .tenant_of_key(&hash)
                .await
                .map_err(AuthError::Lookup)?;
            state.keys.put(&hash, owner.clone());
            owner
        }
    };
    match owner {
        Some(owner) if owner == tenant.as_str() => match state.limiter.check(&tenant) {
            Ok(()) => Ok(tenant),
            Err(wait) => {
                state.metrics.rate_limited.inc();
                Err(AuthError::RateLimited { tenant, wait })
            }
        },
        Some(_) => Err(AuthError::OtherTenant(tenant)),
        None => Err(AuthError::KeyInvalid),
    }
}
