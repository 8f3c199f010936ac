//! The admin API: `POST /v1/admin/tenants` creates a tenant (the answer is
//! the only time its API key and signing secret are shown); `PATCH
//! /v1/admin/tenants/{id}` changes its limits in KV `SB_TENANTS`, which every
//! instance watches, so the change applies everywhere within a second.

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use switchboard_platform::Problem;
use switchboard_platform::problem::internal_error;
use switchboard_proto::TenantId;
use switchboard_proto::tenant::{Limits, TenantConfig};

use super::auth::require_admin;
use super::{AppState, Endpoint, parse_json, repository_problem};
use crate::domain::fields::Fields;
use crate::domain::secrets;
use crate::repository::tenants::{CreateTenantError, NewTenant};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(Method::POST, "/v1/admin/tenants", |r| r.to(create_tenant)),
        Endpoint::new(Method::PATCH, "/v1/admin/tenants/{id}", |r| {
            r.to(patch_tenant)
        }),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    #[serde(default)]
    id: Option<String>,
    name: String,
}

const NAME_RULE: &str = "1 to 200 characters";

async fn create_tenant(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    require_admin(&req, &state)?;
    let input: CreateTenant = parse_json(&body)?;
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Problem::invalid("name", NAME_RULE));
    }
    let id = match input.id {
        Some(id) => TenantId::parse(id)
            .map_err(|e| Problem::invalid("id", format!("must match {}", e.rule)))?,
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
        Err(CreateTenantError::Taken) => {
            return Err(Problem::conflict(format!("tenant id '{id}' is taken")).with_field("id"));
        }
        Err(CreateTenantError::Repository(e)) => {
            return Err(repository_problem("creating a tenant", e));
        }
        Err(CreateTenantError::Publish(e)) => {
            tracing::warn!(error = %e, "tenant config could not be written to KV");
            let _ = internal_error("writing tenant config to KV", &e);
            return Err(Problem::unavailable(
                "NATS did not take the tenant's config; nothing was created, retry",
            ));
        }
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
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    require_admin(&req, &state)?;
    let id = TenantId::parse(path.into_inner())
        .map_err(|e| Problem::invalid("id", format!("must match {}", e.rule)))?;
    let input: serde_json::Value = parse_json(&body)?;
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
    let unavailable = |e: &dyn std::error::Error| {
        tracing::warn!(error = %e, "KV SB_TENANTS unavailable");
        Problem::unavailable(
            "the tenant directory (NATS KV) is unreachable; nothing changed, retry",
        )
    };
    for _ in 0..CAS_ATTEMPTS {
        let entry = kv.entry(id.as_str()).await.map_err(|e| unavailable(&e))?;
        let Some(entry) =
            entry.filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
        else {
            return Err(Problem::not_found(format!("no tenant '{id}'")));
        };
        let mut config: TenantConfig = serde_json::from_slice(&entry.value)
            .map_err(|e| internal_error("decoding a tenant config", &e))?;
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
            Err(e) if e.kind() == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision => {
                continue;
            }
            Err(e) => return Err(unavailable(&e)),
        }
    }
    Err(Problem::unavailable(
        "the tenant's config is being changed concurrently; retry",
    ))
}
