//! A tenant's API keys: `POST`, `GET` and `DELETE /v1/tenants/{t}/api-keys`.
//! A new key is shown once; only its hash is stored, and a revoked key is
//! refused from the next request on.

use std::collections::HashMap;

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use switchboard_platform::Problem;

use super::auth::require_tenant_key;
use super::{AppState, Endpoint, page, parse_json, repository_problem};
use crate::domain::fields::{Fields, text};
use crate::domain::secrets;
use crate::domain::suggestion::cursor;
use crate::repository::api_keys::ApiKeyRow;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(Method::POST, "/v1/tenants/{tenant}/api-keys", |r| {
            r.to(create)
        }),
        Endpoint::new(Method::GET, "/v1/tenants/{tenant}/api-keys", |r| r.to(list)),
        Endpoint::new(Method::DELETE, "/v1/tenants/{tenant}/api-keys/{id}", |r| {
            r.to(revoke)
        }),
    ]
}

const NAME_RULE: &str = "must be 1 to 200 characters, not blank";

fn key_json(row: &ApiKeyRow) -> Value {
    json!({"id": row.id, "name": row.name, "created_at": row.created_at})
}

async fn create(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let tenant = require_tenant_key(&req, &state, &path.into_inner()).await?;
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        parse_json(&body)?
    };
    let f = Fields::object(&input, "", "", &["name"])?;
    let name = f.opt_str("name", NAME_RULE)?.unwrap_or("unnamed");
    text(&f, "name", name, 1, 200, NAME_RULE)?;

    let api_key = secrets::new_api_key();
    let row = state
        .repo
        .create_api_key(
            tenant.as_str(),
            &secrets::new_key_id(),
            name,
            &secrets::hash_key(&api_key),
        )
        .await
        .map_err(|e| repository_problem("creating an API key", e))?;
    tracing::info!(tenant = %tenant, key = %row.id, "API key created");
    let mut body = key_json(&row);
    body["api_key"] = api_key.into();
    Ok(HttpResponse::Created().json(body))
}

async fn list(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let tenant = require_tenant_key(&req, &state, &path.into_inner()).await?;
    let (limit, after) = page(&query)?;
    let rows = state
        .repo
        .list_api_keys(tenant.as_str(), after, limit + 1)
        .await
        .map_err(|e| repository_problem("listing API keys", e))?;
    Ok(HttpResponse::Ok().json(cursor::page(
        rows,
        limit,
        |r| (r.created_at, r.id.as_str()),
        key_json,
    )))
}

async fn revoke(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let (tenant, id) = path.into_inner();
    let tenant = require_tenant_key(&req, &state, &tenant).await?;
    let revoked = state
        .repo
        .revoke_api_key(tenant.as_str(), &id)
        .await
        .map_err(|e| repository_problem("revoking an API key", e))?;
    let Some(hash) = revoked else {
        return Err(Problem::not_found(format!(
            "tenant '{tenant}' has no live API key '{id}'"
        )));
    };
    state.keys.revoked(&state.bus.client, &hash).await;
    tracing::info!(tenant = %tenant, key = %id, "API key revoked");
    Ok(HttpResponse::NoContent().finish())
}
