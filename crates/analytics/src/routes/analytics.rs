//! `GET /v1/tenants/{tenant}/analytics?time_range=7d|30d|90d|all`: the
//! suggestions answer of DESIGN.md §4, from the projection's per-day cells.
//! Its `Sb-Figures-Version` header is the version `analytics.updated`
//! events chain from ([`crate::live`]).

use std::collections::HashMap;

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use switchboard_proto::token::Permissions;

use super::{Endpoint, Failure};
use crate::domain::figures::Analytics;
use crate::domain::ranges::{SUGGESTION_RANGES, TimeRange};
use crate::live::ANALYTICS_ROOM;
use crate::repository::RepositoryError;
use crate::state::AppState;

pub const VERSION_HEADER: &str = "Sb-Figures-Version";

pub fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint::new(
        Method::GET,
        "/v1/tenants/{tenant}/analytics",
        |r| r.to(get),
    )]
}

/// `tenant`'s answer for `range` at `now`, and its version.
pub async fn answer(
    state: &AppState,
    tenant: &str,
    range: TimeRange,
    now: DateTime<Utc>,
) -> Result<(Analytics, u64), RepositoryError> {
    let start = range.start(now).map(|t| t.date_naive());
    let figures = state.repo.range_figures(tenant, start).await?;
    let first = match range {
        TimeRange::All => figures.first_day,
        _ => start,
    };
    Ok((
        Analytics::assemble(&figures.groups, first, now.date_naive()),
        figures.version,
    ))
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
        &SUGGESTION_RANGES,
        TimeRange::Days(30),
    )?;
    let (figures, version) = answer(&state, caller.tenant().as_str(), range, Utc::now()).await?;
    Ok(HttpResponse::Ok()
        .insert_header((VERSION_HEADER, version.to_string()))
        .json(figures))
}
