//! `GET /v1/tenants/{tenant}/connections?active=true|false&sub=&limit=&cursor=`:
//! the connection audit (who, from where, since when, for how long),
//! newest first. The tenant's API key only: it lists every user.

use std::collections::HashMap;

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::json;
use switchboard_platform::callers::{Caller, CallerError};
use switchboard_platform::problem::Invalid;

use super::{Endpoint, Failure, limit};
use crate::repository::connections::{ConnectionFilter, ConnectionRow};
use crate::state::AppState;

pub fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint::new(
        Method::GET,
        "/v1/tenants/{tenant}/connections",
        |r| r.to(list),
    )]
}

const CURSOR_RULE: &str = "must be a next_cursor from an earlier page of this list";

fn encode_cursor(r: &ConnectionRow) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", r.opened_at.timestamp_micros(), r.conn_id))
}

fn decode_cursor(c: &str) -> Result<(DateTime<Utc>, String), Invalid> {
    let bad = || Invalid::new("cursor", CURSOR_RULE);
    let raw = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (at, id) = raw.split_once(':').ok_or_else(bad)?;
    let at = at
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    Ok((at, id.to_owned()))
}

async fn list(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Failure> {
    let caller = state.callers.identify(req.headers(), &path).await?;
    if let Caller::Browser(_) = caller {
        return Err(CallerError::Forbidden {
            permission: "the tenant's API key",
            room: "the connection audit".into(),
        }
        .into());
    }
    let active = match query.get("active").map(String::as_str) {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(Invalid::new("active", "must be true or false").into()),
    };
    let sub = query.get("sub").filter(|s| !s.is_empty()).cloned();
    let limit = limit(query.get("limit"))?;
    let after = query
        .get("cursor")
        .filter(|c| !c.is_empty())
        .map(|c| decode_cursor(c))
        .transpose()?;
    let mut rows = state
        .repo
        .connections(
            caller.tenant().as_str(),
            &ConnectionFilter { active, sub },
            after,
            limit + 1,
        )
        .await?;
    let next = (rows.len() as i64 > limit).then(|| {
        rows.truncate(limit as usize);
        rows.last().map(encode_cursor)
    });
    let now = Utc::now();
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let end = r.closed_at.unwrap_or(now);
            json!({
                "conn_id": r.conn_id, "sub": r.sub, "ip": r.ip, "user_agent": r.user_agent,
                "opened_at": r.opened_at, "closed_at": r.closed_at, "close_code": r.close_code,
                "active": r.closed_at.is_none(),
                "duration_ms": (end - r.opened_at).num_milliseconds().max(0),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"items": items, "next_cursor": next.flatten()})))
}
