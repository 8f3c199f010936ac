//! Who is calling: the operator (admin token) or a tenant's server (API key).

use actix_web::HttpRequest;
use actix_web::http::header;
use switchboard_platform::Problem;
use switchboard_proto::TenantId;

use super::{AppState, repository_problem};
use crate::domain::secrets::{constant_time_eq, hash_key};

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The admin API needs `Authorization: Bearer $SB_ADMIN_TOKEN`.
pub fn require_admin(req: &HttpRequest, state: &AppState) -> Result<(), Problem> {
    let Some(expected) = state.settings.admin_token.as_deref() else {
        return Err(Problem::unauthorized(
            "the admin API is disabled: SB_ADMIN_TOKEN is not set on this ingest",
        ));
    };
    match bearer(req) {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(Problem::unauthorized("admin token is not valid")),
        None => Err(Problem::unauthorized(
            "missing 'Authorization: Bearer <admin token>' header",
        )),
    }
}

/// A tenant's API key, which must belong to the tenant of the path, within
/// the tenant's request rate (`http_rps`; over it, `429` with `Retry-After`).
/// Owners of keys come from [`crate::keycache`], which a revoke empties on
/// every instance, so a revoked key is refused at once.
pub async fn require_tenant_key(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
) -> Result<TenantId, Problem> {
    let tenant = TenantId::parse(tenant)
        .map_err(|e| Problem::invalid("tenant", format!("must match {}", e.rule)))?;
    let Some(key) = bearer(req) else {
        return Err(Problem::unauthorized(
            "missing 'Authorization: Bearer sk_…' header with the tenant's API key",
        ));
    };
    let hash = hash_key(key);
    let owner = match state.keys.get(&hash) {
        Some(owner) => owner,
        None => {
            let owner = state
                .repo
                .tenant_of_key(&hash)
                .await
                .map_err(|e| repository_problem("looking up an API key", e))?;
            state.keys.put(&hash, owner.clone());
            owner
        }
    };
    match owner {
        Some(owner) if owner == tenant.as_str() => match state.limiter.check(&tenant) {
            Ok(()) => Ok(tenant),
            Err(wait) => Err(Problem::too_many_requests(
                format!("tenant '{tenant}' is over its http_rps limit; retry later"),
                wait.as_secs_f64().ceil() as u64,
            )),
        },
        Some(_) => Err(Problem::forbidden(format!(
            "this API key does not belong to tenant '{tenant}'"
        ))),
        None => Err(Problem::unauthorized("API key is not valid or was revoked")),
    }
}
