//! Per-user notification preferences and notifications (DESIGN.md §4). A
//! notification is stored, then sent at once as event `notification` in room
//! `user:{user}`, or held while the user is inside quiet hours and sent by
//! the delivery loop when they end.

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use switchboard_platform::Problem;
use switchboard_proto::TenantId;

use super::auth::require_tenant_key;
use super::{AppState, Endpoint, parse_json, repository_problem};
use crate::delivery::deliver_now;
use crate::domain::notification::{NewNotification, Preferences};
use crate::domain::suggestion::{USER_ID_RULE, parse_user_id};
use crate::repository::notifications::NotificationRow;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::GET,
            "/v1/tenants/{tenant}/users/{user}/notification-preferences",
            |r| r.to(get_preferences),
        ),
        Endpoint::new(
            Method::PUT,
            "/v1/tenants/{tenant}/users/{user}/notification-preferences",
            |r| r.to(put_preferences),
        ),
        Endpoint::new(
            Method::POST,
            "/v1/tenants/{tenant}/users/{user}/notifications",
            |r| r.to(notify),
        ),
    ]
}

fn user(user: &str) -> Result<(), Problem> {
    parse_user_id(user)
        .map(|_| ())
        .ok_or_else(|| Problem::invalid("user", USER_ID_RULE))
}

/// The user's preferences, or the defaults when they have none.
pub async fn preferences_of(
    state: &AppState,
    tenant: &TenantId,
    user: &str,
) -> Result<Preferences, Problem> {
    let stored = state
        .repo
        .preferences(tenant.as_str(), user)
        .await
        .map_err(|e| repository_problem("reading notification preferences", e))?;
    Ok(stored
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default())
}

async fn get_preferences(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let (tenant, user_id) = path.into_inner();
    let tenant = require_tenant_key(&req, &state, &tenant).await?;
    user(&user_id)?;
    Ok(HttpResponse::Ok().json(preferences_of(&state, &tenant, &user_id).await?))
}

async fn put_preferences(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let (tenant, user_id) = path.into_inner();
    let tenant = require_tenant_key(&req, &state, &tenant).await?;
    user(&user_id)?;
    let input: Value = parse_json(&body)?;
    let prefs = Preferences::parse(&input)?;
    let value = serde_json::to_value(&prefs).expect("preferences serialize");
    state
        .repo
        .put_preferences(tenant.as_str(), &user_id, &value)
        .await
        .map_err(|e| repository_problem("storing notification preferences", e))?;
    Ok(HttpResponse::Ok().json(value))
}

async fn notify(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let (tenant, user_id) = path.into_inner();
    let tenant = require_tenant_key(&req, &state, &tenant).await?;
    user(&user_id)?;
    let input: Value = parse_json(&body)?;
    let n = NewNotification::parse(&input, state.settings.max_event_bytes)?;
    let prefs = preferences_of(&state, &tenant, &user_id).await?;
    let now = state.clock.now();
    let held_until = prefs.held_until(now);
    let row = NotificationRow {
        id: format!("ntf_{}", uuid::Uuid::now_v7().simple()),
        tenant_id: tenant.as_str().to_owned(),
        user_id: user_id.clone(),
        message: n.message,
        severity: n.severity,
        data: n.data,
        held: held_until.is_some(),
        live: prefs.websocket(),
        created_at: now,
        deliver_at: held_until.unwrap_or(now),
        delivered_at: None,
    };
    state
        .repo
        .insert_notification(&row)
        .await
        .map_err(|e| repository_problem("storing a notification", e))?;
    let body = match held_until {
        Some(at) => {
            tracing::info!(tenant = %tenant, user = %user_id, until = %at, "notification held for quiet hours");
            json!({"id": row.id, "status": "held", "deliver_at": at})
        }
        None => {
            deliver_now(&state, std::slice::from_ref(&row.id)).await;
            json!({"id": row.id, "status": "delivered"})
        }
    };
    Ok(HttpResponse::Accepted().json(body))
}
