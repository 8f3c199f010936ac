//! The admin API: `POST /v1/admin/tenants` creates a tenant (the answer is
//! the only time its API key and signing secret are shown); `PATCH
//! /v1/admin/tenants/{id}` changes its limits in KV `SB_TENANTS`, which every
//! instance watches, so the change applies everywhere within a second.

use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use anyhow::Context as _;
use async_nats::jetstream::kv;
use switchboard_platform::{Problem, api_error};
use switchboard_proto::TenantId;
use switchboard_proto::tenant::{Limits, TenantConfig};

use super::auth::Admin;
use super::{ApiError, Endpoint, Invalid, NotJson, json_body, repository_problem};
use crate::domain::fields::{Fields, text};
use crate::domain::secrets;
use crate::repository::RepositoryError;
use crate::repository::tenants::{CreateTenantError, NewTenant};
use crate::state::AppState;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(Method::POST, "/v1/admin/tenants", |r| r.to(create_tenant)),
        Endpoint::new(Method::PATCH, "/v1/admin/tenants/{id}", |r| {
            r.to(patch_tenant)
        }),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    NotJson(#[from] NotJson),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("tenant id '{0}' is taken")]
    Taken(TenantId),
    #[error("no tenant '{0}'")]
    NotFound(TenantId),
    #[error("the tenant's config is being changed concurrently; retry")]
    Contended,
    #[error("storing the tenant failed")]
    Repository(#[source] RepositoryError),
    #[error("the tenant directory (KV SB_TENANTS) failed")]
    Directory(#[source] async_nats::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError for AdminError {
    fn problem(&self) -> Option<Problem> {
        Some(match self {
            Self::NotJson(e) => e.into(),
            Self::Invalid(e) => e.into(),
            Self::Taken(_) => Problem::conflict(self.to_string()).with_field("id"),
            Self::NotFound(_) => Problem::not_found(self.to_string()),
            Self::Contended => Problem::unavailable(self.to_string()),
            Self::Repository(e) => return repository_problem(e),
            Self::Directory(_) => Problem::unavailable(
                "the tenant directory (NATS KV) is unreachable; nothing changed, retry",
            ),
            Self::Unexpected(_) => return None,
        })
    }
}

api_error!(AdminError);

const NAME_RULE: &str = "must be 1 to 200 characters, not blank";

async fn create_tenant(
    _: Admin,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let input = json_body(&body)?;
    let f = Fields::object(&input, "", "", &["id", "name"])?;
    let name = f.str("name", NAME_RULE)?.trim();
    text(&f, "name", name, 1, 200, NAME_RULE)?;
    let id = match f.opt_str("id", "a tenant id")? {
        Some(id) => {
            TenantId::parse(id).map_err(|e| f.invalid("id", format!("must match {}", e.rule)))?
        }
        None => TenantId::parse(secrets::new_tenant_id()).expect("generated ids follow the rule"),
    };

    let api_key = secrets::new_api_key();
    let signing_secret = secrets::new_signing_secret();
    let key_id = secrets::new_key_id();
    let key_hash = secrets::hash_key(&api_key);
    let config = TenantConfig {
        id: id.clone(),
        name: name.to_owned(),
        signing_keys: vec![signing_secret.clone()],
        limits: Limits::default(),
    };
    let value = serde_json::to_vec(&config).expect("tenant config serializes");
    let kv = state.bus.tenants.clone();
    let kv_key = id.as_str().to_owned();

    let created = state
        .repo
        .create_tenant(
            NewTenant {
                id: id.as_str(),
                name,
                key_id: &key_id,
                key_name: "default",
                key_hash: &key_hash,
            },
            move || async move { kv.put(kv_key, value.into()).await.map(|_| ()) },
        )
        .await;
    let created_at = match created {
        Ok(at) => at,
        Err(CreateTenantError::Taken) => return Err(AdminError::Taken(id)),
        Err(CreateTenantError::Repository(e)) => return Err(AdminError::Repository(e)),
        Err(CreateTenantError::Publish(e)) => return Err(AdminError::Directory(Box::new(e))),
    };
    tracing::info!(tenant = %id, "tenant created");
    Ok(HttpResponse::Created().json(serde_json::json!({
        "id": id,
        "name": name,
        "api_key": api_key,
        "api_key_id": key_id,
        "signing_secret": signing_secret,
        "limits": config.limits,
        "created_at": created_at,
    })))
}

const LIMIT_RULE: &str = "must be a whole number from 0 (no limit) to 4294967295";
const LIMIT_FIELDS: [&str; 4] = [
    "http_rps",
    "connections",
    "rooms_per_connection",
    "client_msgs_per_s",
];
/// Compare-and-set attempts against concurrent changes of one tenant.
const CAS_ATTEMPTS: usize = 10;

/// Changes only the limits the body names.
async fn patch_tenant(
    _: Admin,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    let id = TenantId::parse(path.into_inner())
        .map_err(|e| Invalid::new("id", format!("must match {}", e.rule)))?;
    let input = json_body(&body)?;
    let f = Fields::object(&input, "", "", &["limits"])?;
    let limits = f.required("limits", "an object of limits to change")?;
    let l = Fields::object(limits, "limits.", "limits", &LIMIT_FIELDS)?;
    let mut changes = Vec::new();
    for name in LIMIT_FIELDS {
        if let Some(v) = l.opt_u64(name, LIMIT_RULE)? {
            let v = u32::try_from(v).map_err(|_| l.invalid(name, LIMIT_RULE))?;
            changes.push((name, v));
        }
    }

    let kv = &state.bus.tenants;
    for _ in 0..CAS_ATTEMPTS {
        let entry = kv
            .entry(id.as_str())
            .await
            .map_err(|e| AdminError::Directory(Box::new(e)))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Err(AdminError::NotFound(id));
        };
        let mut config: TenantConfig =
            serde_json::from_slice(&entry.value).context("decoding a tenant config")?;
        for (name, v) in &changes {
            let slot = match *name {
                "http_rps" => &mut config.limits.http_rps,
                "connections" => &mut config.limits.connections,
                "rooms_per_connection" => &mut config.limits.rooms_per_connection,
                _ => &mut config.limits.client_msgs_per_s,
            };
            *slot = *v;
        }
        let value = serde_json::to_vec(&config).expect("tenant config serializes");
        match kv.update(id.as_str(), value.into(), entry.revision).await {
            Ok(_) => {
                tracing::info!(tenant = %id, limits = ?config.limits, "tenant limits changed");
                return Ok(HttpResponse::Ok().json(serde_json::json!({
                    "id": id,
                    "name": config.name,
                    "limits": config.limits,
                })));
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(AdminError::Directory(Box::new(e))),
        }
    }
    Err(AdminError::Contended)
}
