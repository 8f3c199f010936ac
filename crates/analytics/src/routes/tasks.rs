//! `GET /v1/tenants/{tenant}/analytics/tasks?time_range=24h|7d|30d|90d|all
//! &bucket=hour|day`: the orchestrator's tasks created in the range.

use std::collections::HashMap;

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use switchboard_proto::token::Permissions;

use super::{Endpoint, Failure};
use crate::domain::ranges::{TASK_RANGES, TimeRange};
use crate::domain::tasks::{Bucket, TaskAnalytics};
use crate::live::ANALYTICS_ROOM;
use crate::state::AppState;

pub fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint::new(
        Method::GET,
        "/v1/tenants/{tenant}/analytics/tasks",
        |r| r.to(get),
    )]
}

async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Failure> {
    let caller = state.callers.identify(req.headers(), &path).await?;
    caller.require_room(ANALYTICS_ROOM, Permissions::READ)?;
    let range = TimeRange::parse(
        query.get("time_range").map(String::as_str),
        &TASK_RANGES,
        TimeRange::Days(30),
    )?;
    let bucket = Bucket::parse(query.get("bucket").map(String::as_str), range)?;
    let now = Utc::now();
    let start = range.start(now);
    let rows = state
        .repo
        .tasks_since(caller.tenant().as_str(), start)
        .await?;
    let first = start.or_else(|| rows.iter().map(|r| r.created_at).min());
    Ok(HttpResponse::Ok().json(TaskAnalytics::assemble(&rows, range, bucket, first, now)))
}
