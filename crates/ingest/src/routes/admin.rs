//! `POST /v1/admin/tenants`: operators create tenants. The answer is the only
//! time the API key and signing secret are shown.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use switchboard_platform::Problem;
use switchboard_platform::problem::internal_error;
use switchboard_proto::TenantId;
use switchboard_proto::tenant::{Limits, TenantConfig};

use super::auth::require_admin;
use super::{AppState, parse_json, repository_problem};
use crate::domain::secrets;
use crate::repository::tenants::{CreateTenantError, NewTenant};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/admin/tenants", web::post().to(create_tenant));
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
