//! `POST /v1/tenants/{t}/tokens`: ingest mints a browser token, the same
//! HS256 JWT a tenant backend could sign itself, with the tenant's first
//! signing key from KV `SB_TENANTS` (signing secrets are not in PostgreSQL).

use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use anyhow::Context as _;
use serde_json::{Value, json};
use switchboard_platform::{Problem, api_error};
use switchboard_proto::tenant::TenantConfig;
use switchboard_proto::token::{self, Claims, Permissions};
use switchboard_proto::{RoomPattern, TenantId};

use super::auth::TenantKey;
use super::{ApiError, Endpoint, Invalid, NotJson, json_body};
use crate::domain::fields::{Fields, text};
use crate::state::AppState;

pub fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint::new(
        Method::POST,
        "/v1/tenants/{tenant}/tokens",
        |r| r.to(mint),
    )]
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    NotJson(#[from] NotJson),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("tenant '{0}' has no config in KV SB_TENANTS")]
    NoConfig(TenantId),
    #[error("tenant '{0}' has no signing key to sign with")]
    NoSigningKey(TenantId),
    #[error("the tenant directory (KV SB_TENANTS) failed")]
    Directory(#[source] async_nats::jetstream::kv::EntryError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError for TokenError {
    fn problem(&self) -> Option<Problem> {
        Some(match self {
            Self::NotJson(e) => e.into(),
            Self::Invalid(e) => e.into(),
            Self::NoConfig(_) => Problem::not_found(self.to_string()),
            Self::NoSigningKey(_) => Problem::conflict(self.to_string()),
            Self::Directory(_) => {
                Problem::unavailable("the tenant directory (NATS KV) is unreachable; retry")
            }
            Self::Unexpected(_) => return None,
        })
    }
}

api_error!(TokenError);

pub const DEFAULT_TTL_S: u64 = 3600;
pub const MAX_TTL_S: u64 = 86_400;
const SUB_RULE: &str = "must be 1 to 256 characters, not blank";
const ROOMS_RULE: &str = "must be an object of room pattern -> list of permissions";
const PERMISSIONS_RULE: &str =
    "must be a list of permissions from read, publish, send, presence, admin";
const INFO_RULE: &str = "must be a JSON object";
const TTL_RULE: &str = "must be a whole number of seconds from 1 to 86400";

async fn mint(
    tenant: TenantKey,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, TokenError> {
    let input = json_body(&body)?;
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
            .map_err(|e| Invalid::new(field.clone(), format!("must match {}", e.rule)))?;
        let list = perms
            .as_array()
            .ok_or_else(|| Invalid::new(field.clone(), PERMISSIONS_RULE))?;
        let mut granted = Permissions::empty();
        for name in list {
            let one = name
                .as_str()
                .and_then(Permissions::parse)
                .ok_or_else(|| Invalid::new(field.clone(), PERMISSIONS_RULE))?;
            granted = granted.union(one);
        }
        rooms.insert(p, granted);
    }
    let info = match f.get("info") {
        None => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(f.invalid("info", INFO_RULE).into()),
    };
    let ttl = f.opt_u64("ttl_s", TTL_RULE)?.unwrap_or(DEFAULT_TTL_S);
    if !(1..=MAX_TTL_S).contains(&ttl) {
        return Err(f.invalid("ttl_s", TTL_RULE).into());
    }

    let config = tenant_config(&state, &tenant).await?;
    let Some(secret) = config.signing_keys.first() else {
        return Err(TokenError::NoSigningKey(tenant.0));
    };
    // Tokens are checked by gateways against real time, never a test clock.
    let now = chrono::Utc::now().timestamp();
    let exp = now + ttl as i64;
    let claims = Claims {
        sub: sub.to_owned(),
        tenant: tenant.0.clone(),
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
pub async fn tenant_config(
    state: &AppState,
    tenant: &TenantId,
) -> Result<TenantConfig, TokenError> {
    let entry = state
        .bus
        .tenants
        .get(tenant.as_str())
        .await
        .map_err(TokenError::Directory)?;
    let Some(value) = entry else {
        return Err(TokenError::NoConfig(tenant.clone()));
    };
    Ok(serde_json::from_slice(&value).context("decoding a tenant config")?)
}
