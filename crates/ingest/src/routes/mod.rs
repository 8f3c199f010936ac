//! ingest's HTTP API, one file per resource. Each handler: parse → domain →
//! repository/publish → response; every error is a problem+json [`Problem`].
//! Every endpoint is listed once in [`endpoints`], which both mounts it and
//! lets a test check that `/openapi.json` documents it.

pub mod admin;
pub mod api_keys;
pub mod auth;
pub mod events;
pub mod notifications;
pub mod openapi;
pub mod room_state;
pub mod suggestions;
pub mod tokens;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::Method;
use actix_web::{Route, web};
use chrono::{DateTime, Utc};
use switchboard_platform::Problem;
use switchboard_platform::nats::{Bus, PublishEventError};
use switchboard_platform::problem::internal_error;
use switchboard_platform::tenants::TenantDirectory;

use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::suggestion::cursor;
use crate::keycache::KeyCache;
use crate::ratelimit::RateLimiter;
use crate::repository::{Repository, RepositoryError};

/// JetStream on a NATS connection of the HTTP worker's own: a publish and
/// its ack stay on the thread that serves the request. Through the shared
/// connection (driven by the main runtime) every publish crossed threads
/// twice, and at moderate rates those wake-ups cost ingest more than the
/// request itself.
#[derive(Clone)]
pub struct WorkerJetStream(pub async_nats::jetstream::Context);

/// What every handler reaches: the database, NATS, the settings, the clock
/// and the tenants' limits.
#[derive(Clone)]
pub struct AppState {
    pub repo: Repository,
    pub bus: Bus,
    pub settings: Arc<Settings>,
    pub clock: Clock,
    pub tenants: TenantDirectory,
    pub limiter: Arc<RateLimiter>,
    pub keys: KeyCache,
    /// Which stored events are timed hop by hop.
    pub hops: Arc<crate::hops::HopSampler>,
}

/// A database failure as the client sees it: `503` when PostgreSQL cannot be
/// reached (retry), `500` with a logged id otherwise.
pub fn repository_problem(context: &str, e: RepositoryError) -> Problem {
    match e {
        RepositoryError::Pool(_) => {
            tracing::warn!(error = %e, "{context}: database unavailable");
            Problem::unavailable("the database is unreachable; nothing was stored, retry later")
        }
        RepositoryError::Query(_) => internal_error(context, &e),
    }
}

/// A failed JetStream publish as the client sees it.
pub fn publish_problem(e: PublishEventError) -> Problem {
    tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "publish to JetStream failed");
    Problem::unavailable(
        "the event store did not acknowledge; nothing is guaranteed stored, retry with the same Idempotency-Key",
    )
}

/// Parses a JSON body with serde's message, which names the field and where.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("body is not valid JSON for this endpoint: {e}")))
}

pub const LIMIT_RULE: &str = "must be a whole number from 1 to 500";
pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 500;

/// A keyset position in a newest-first list: after this (created_at, id).
pub type After = Option<(DateTime<Utc>, String)>;

/// `limit` and `cursor` of a list: how many, and after which (created_at,
/// id) position.
pub fn page(query: &HashMap<String, String>) -> Result<(i64, After), Problem> {
    let limit = match query.get("limit") {
        None => DEFAULT_PAGE,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| Problem::invalid("limit", LIMIT_RULE))?,
    };
    let after = match query.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(cursor::decode(c).ok_or_else(|| Problem::invalid("cursor", cursor::RULE))?),
    };
    Ok((limit, after))
}

/// One endpoint: how it is mounted, and what `/openapi.json` must list.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub mount: fn(Route) -> Route,
}

impl Endpoint {
    pub fn new(method: Method, path: &'static str, mount: fn(Route) -> Route) -> Self {
        Self {
            method,
            path,
            mount,
        }
    }
}

/// Every endpoint of ingest's API (operational ones are in the platform).
///
/// The router tries routes in this order, running each dynamic path's regex
/// until one matches, so the hot path (events) comes first: behind the other
/// resources it spent about 15% of ingest's CPU failing their regexes.
pub fn endpoints() -> Vec<Endpoint> {
    [
        events::endpoints(),
        admin::endpoints(),
        api_keys::endpoints(),
        notifications::endpoints(),
        openapi::endpoints(),
        room_state::endpoints(),
        suggestions::endpoints(),
        tokens::endpoints(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    for e in endpoints() {
        cfg.route(e.path, (e.mount)(web::route().method(e.method)));
    }
}
