//! `POST /v1/tenants/{t}/tokens`: ingest mints a browser token, the same
//! HS256 JWT a tenant backend could sign itself, with the tenant's first
//! signing key from KV `SB_TENANTS` (signing secrets are not in PostgreSQL).

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use switchboard_platform::Problem;
use switchboard_proto::RoomPattern;
use switchboard_proto::tenant::TenantConfig;
use switchboard_proto::token::{self, Claims, Permissions};

use super::auth::require_tenant_key;
use super::{AppState, Endpoint, parse_json};
use crate::domain::fields::{Fields, text};

pub fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint::new(
        Method::POST,
        "/v1/tenants/{tenant}/tokens",
        |r| r.to(mint),
    )]
}

pub const DEFAULT_TTL_S: u64 = 3600;
pub const MAX_TTL_S: u64 = 86_400;
const SUB_RULE: &str = "must be 1 to 256 characters, not blank";
const ROOMS_RULE: &str = "must be an object of room pattern -> list of permissions";
const PERMISSIONS_RULE: &str =
    "must be a list of permissions from read, publish, send, presence, admin";
const INFO_RULE: &str = "must be a JSON object";
const TTL_RULE: &str = "must be a whole number of seconds from 1 to 86400";

async fn mint(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let tenant = require_tenant_key(&req, &state, &path.into_inner()).await?;
    let input: Value = parse_json(&body)?;
    let f = Fields::object(&input, "", "", &["sub", "rooms", "info", "ttl_s"])?;
    let sub = f.str("sub", SUB_RULE)?;
    text(&f, "sub", sub, 1, 256, SUB_RULE)?;
    let rooms_in = f
        .required("rooms", ROOMS_RULE)?
        .as_object()
        .ok_or_else(|| f.invalid("rooms", ROOMS_RULE))?;
    let mut rooms = std::collections::BTreeMap::new();
    for (pattern, perms) in rooms_in {
        let field = format!("rooms.{pattern}");
        let p = RoomPattern::parse(pattern)
            .map_err(|e| Problem::invalid(field.clone(), format!("must match {}", e.rule)))?;
        let list = perms
            .as_array()
            .ok_or_else(|| Problem::invalid(field.clone(), PERMISSIONS_RULE))?;
        let mut granted = Permissions::empty();
        for name in list {
            let one = name
                .as_str()
                .and_then(Permissions::parse)
                .ok_or_else(|| Problem::invalid(field.clone(), PERMISSIONS_RULE))?;
            granted = granted.union(one);
        }
        rooms.insert(p, granted);
    }
    let info = match f.get("info") {
        None => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(f.invalid("info", INFO_RULE)),
    };
    let ttl = f.opt_u64("ttl_s", TTL_RULE)?.unwrap_or(DEFAULT_TTL_S);
    if !(1..=MAX_TTL_S).contains(&ttl) {
        return Err(f.invalid("ttl_s", TTL_RULE));
    }

    let config = tenant_config(&state, tenant.as_str()).await?;
    let Some(secret) = config.signing_keys.first() else {
        return Err(Problem::conflict(format!(
            "tenant '{tenant}' has no signing key to sign with"
        )));
    };
    // Tokens are checked by gateways against real time, never a test clock.
    let now = chrono::Utc::now().timestamp();
    let exp = now + ttl as i64;
    let claims = Claims {
        sub: sub.to_owned(),
        tenant: tenant.clone(),
        exp,
        iat: Some(now),
        info,
        rooms,
    };
    let token = token::sign(&claims, secret.as_bytes());
    Ok(HttpResponse::Created().json(json!({"token": token, "exp": exp})))
}

/// The tenant's public config, read from KV `SB_TENANTS` itself (not the
/// watched copy), so a tenant created a moment ago is found.
pub async fn tenant_config(state: &AppState, tenant: &str) -> Result<TenantConfig, Problem> {
    let entry = state.bus.tenants.get(tenant).await.map_err(|e| {
        tracing::warn!(error = %e, "reading KV SB_TENANTS failed");
        Problem::unavailable("the tenant directory (NATS KV) is unreachable; retry")
    })?;
    let Some(value) = entry else {
        return Err(Problem::not_found(format!(
            "tenant '{tenant}' has no config in KV SB_TENANTS"
        )));
    };
    serde_json::from_slice(&value)
        .map_err(|e| switchboard_platform::problem::internal_error("decoding a tenant config", &e))
}
