//! Per-user notification preferences and notifications (DESIGN.md §4). A
//! notification is stored, then sent at once as event `notification` in room
//! `user:{user}`, or held while the user is inside quiet hours and sent by
//! the delivery loop when they end. The answer says which happened.

use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use serde_json::json;
use switchboard_platform::{Problem, api_error};
use switchboard_proto::TenantId;

use super::auth::TenantKey;
use super::{ApiError, Endpoint, Invalid, NotJson, json_body, repository_problem};
use crate::delivery::deliver_now;
use crate::domain::notification::{NewNotification, Preferences};
use crate::domain::suggestion::{USER_ID_RULE, parse_user_id};
use crate::repository::RepositoryError;
use crate::repository::notifications::NotificationRow;
use crate::state::AppState;

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

#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error(transparent)]
    NotJson(#[from] NotJson),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the notification store failed")]
    Repository(#[from] RepositoryError),
}

impl ApiError for NotificationError {
    fn problem(&self) -> Option<Problem> {
        Some(match self {
            Self::NotJson(e) => e.into(),
            Self::Invalid(e) => e.into(),
            Self::Repository(e) => return repository_problem(e),
        })
    }
}

api_error!(NotificationError);

fn user(path: web::Path<(String, String)>) -> Result<String, Invalid> {
    let (_, user) = path.into_inner();
    parse_user_id(&user)
        .map(|_| user.clone())
        .ok_or_else(|| Invalid::new("user", USER_ID_RULE))
}

/// The user's preferences, or the defaults when they have none.
pub async fn preferences_of(
    state: &AppState,
    tenant: &TenantId,
    user: &str,
) -> Result<Preferences, RepositoryError> {
    let stored = state.repo.preferences(tenant.as_str(), user).await?;
    Ok(stored
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default())
}

async fn get_preferences(
    tenant: TenantKey,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, NotificationError> {
    let user = user(path)?;
    Ok(HttpResponse::Ok().json(preferences_of(&state, &tenant, &user).await?))
}

async fn put_preferences(
    tenant: TenantKey,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, NotificationError> {
    let user = user(path)?;
    let input = json_body(&body)?;
    let prefs = Preferences::parse(&input)?;
    let value = serde_json::to_value(&prefs).expect("preferences serialize");
    state
        .repo
        .put_preferences(tenant.as_str(), &user, &value)
        .await?;
    Ok(HttpResponse::Ok().json(value))
}

/// `202` with what became of it: `delivered` (sent to room `user:{user}`
/// now), `held` (quiet hours; sent at `deliver_at`), `queued` (sending
/// failed or is in the delivery loop's hands: it sends it within
/// `SB_NOTIFY_POLL`), or `stored` (the user's channels leave out
/// `websocket`: kept, sent to no socket).
async fn notify(
    tenant: TenantKey,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, NotificationError> {
    let user_id = user(path)?;
    let input = json_body(&body)?;
    let n = NewNotification::parse(&input, state.settings.max_event_bytes)?;
    let prefs = preferences_of(&state, &tenant, &user_id).await?;
    let now = state.clock.now();
    let held_until = prefs.held_until(now);
    let live = prefs.websocket();
    let row = NotificationRow {
        id: format!("ntf_{}", uuid::Uuid::now_v7().simple()),
        tenant_id: tenant.as_str().to_owned(),
        user_id: user_id.clone(),
        message: n.message,
        severity: n.severity,
        data: n.data,
        held: held_until.is_some(),
        live,
        created_at: now,
        deliver_at: held_until.unwrap_or(now),
        delivered_at: None,
    };
    state.repo.insert_notification(&row).await?;
    let body = match held_until {
        Some(at) if live => {
            tracing::info!(tenant = %tenant, user = %user_id, until = %at, "notification held for quiet hours");
            json!({"id": row.id, "status": "held", "deliver_at": at})
        }
        _ => {
            let delivered = deliver_now(&state, std::slice::from_ref(&row.id)).await == 1;
            let status = match (live, delivered) {
                (false, _) => "stored",
                (true, true) => "delivered",
                (true, false) => "queued",
            };
            json!({"id": row.id, "status": status, "channels": prefs.channels})
        }
    };
    Ok(HttpResponse::Accepted().json(body))
}
