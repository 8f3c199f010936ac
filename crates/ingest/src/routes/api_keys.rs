//! A tenant's API keys: `POST`, `GET` and `DELETE /v1/tenants/{t}/api-keys`.
//! A new key is shown once; only its hash is stored, and a revoked key is
//! refused from the next request on.

use std::collections::HashMap;

use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use serde_json::{Value, json};
use switchboard_platform::{Problem, api_error};
use switchboard_proto::TenantId;

use super::auth::TenantKey;
use super::{ApiError, Endpoint, Invalid, NotJson, json_body, page, repository_problem};
use crate::domain::fields::{Fields, text};
use crate::domain::secrets;
use crate::domain::suggestion::cursor;
use crate::repository::RepositoryError;
use crate::repository::api_keys::ApiKeyRow;
use crate::state::AppState;

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

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error(transparent)]
    NotJson(#[from] NotJson),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("tenant '{tenant}' has no live API key '{id}'")]
    NotFound { tenant: TenantId, id: String },
    #[error("the API key store failed")]
    Repository(#[from] RepositoryError),
}

impl ApiError for ApiKeyError {
    fn problem(&self) -> Option<Problem> {
        Some(match self {
            Self::NotJson(e) => e.into(),
            Self::Invalid(e) => e.into(),
            Self::NotFound { .. } => Problem::not_found(self.to_string()),
            Self::Repository(e) => return repository_problem(e),
        })
    }
}

api_error!(ApiKeyError);

const NAME_RULE: &str = "must be 1 to 200 characters, not blank";

fn key_json(row: &ApiKeyRow) -> Value {
    json!({"id": row.id, "name": row.name, "created_at": row.created_at})
}

async fn create(
    tenant: TenantKey,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiKeyError> {
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        json_body(&body)?
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
        .await?;
    tracing::info!(tenant = %tenant, key = %row.id, "API key created");
    let mut body = key_json(&row);
    body["api_key"] = api_key.into();
    Ok(HttpResponse::Created().json(body))
}

async fn list(
    tenant: TenantKey,
    query: web::Query<HashMap<String, String>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiKeyError> {
    let (limit, after) = page(&query)?;
    let rows = state
        .repo
        .list_api_keys(tenant.as_str(), after, limit + 1)
        .await?;
    Ok(HttpResponse::Ok().json(cursor::page(
        rows,
        limit,
        |r| (r.created_at, r.id.as_str()),
        key_json,
    )))
}

async fn revoke(
    tenant: TenantKey,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiKeyError> {
    let (_, id) = path.into_inner();
    let revoked = state.repo.revoke_api_key(tenant.as_str(), &id).await?;
    let Some(hash) = revoked else {
        return Err(ApiKeyError::NotFound {
            tenant: tenant.0,
            id,
        });
    };
    state.keys.revoked(&state.bus.client, &hash).await;
    tracing::info!(tenant = %tenant, key = %id, "API key revoked");
    Ok(HttpResponse::NoContent().finish())
}
