//! ingest's HTTP API, one file per resource. Every handler has one shape:
//! its caller comes from an extractor ([`auth::TenantKey`], [`auth::Admin`]),
//! the body is parsed ([`json_body`]: not JSON is `400`) and checked field by
//! field (a broken rule is `422`, naming the field and the rule), then the
//! domain, repository or publish step, then the answer. Each handler's
//! failures are a typed error of its own, mapped to problem+json through
//! [`ApiError`] (platform), which logs unexpected ones once.
//!
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

use actix_web::web;
use chrono::{DateTime, Utc};
use switchboard_platform::Problem;
pub use switchboard_platform::problem::{ApiError, Invalid, NotJson, json_body};

use crate::domain::suggestion::cursor;
use crate::repository::RepositoryError;

/// A database failure as the client sees it: `503` when PostgreSQL cannot be
/// reached (retry), unexpected (`500`, logged with an id) otherwise.
pub fn repository_problem(e: &RepositoryError) -> Option<Problem> {
    e.problem("nothing was stored")
}

pub const LIMIT_RULE: &str = "must be a whole number from 1 to 500";
pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 500;

/// A keyset position in a newest-first list: after this (created_at, id).
pub type After = Option<(DateTime<Utc>, String)>;

/// `limit` and `cursor` of a list: how many, and after which (created_at,
/// id) position.
pub fn page(query: &HashMap<String, String>) -> Result<(i64, After), Invalid> {
    let limit = match query.get("limit") {
        None => DEFAULT_PAGE,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| Invalid::new("limit", LIMIT_RULE))?,
    };
    let after = match query.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(cursor::decode(c).ok_or_else(|| Invalid::new("cursor", cursor::RULE))?),
    };
    Ok((limit, after))
}

pub use switchboard_platform::http::Endpoint;

/// Every endpoint of ingest's API (operational ones are in the platform).
///
/// The router tries paths in this order, running each dynamic path's regex
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

/// Mounts every endpoint (a method a path does not take is `405`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    switchboard_platform::http::mount(cfg, endpoints());
}

#[cfg(test)]
mod tests {
    use actix_web::dev::ResourceDef;

    /// Paths are tried in order: one that an earlier pattern matches would
    /// be answered `405` (or by the wrong handler).
    #[test]
    fn no_path_is_taken_by_an_earlier_pattern() {
        let mut seen: Vec<&'static str> = Vec::new();
        for e in super::endpoints() {
            if seen.contains(&e.path) {
                continue;
            }
            let literal = e.path.replace(['{', '}'], "");
            for earlier in &seen {
                assert!(
                    !ResourceDef::new(*earlier).is_match(&literal),
                    "{} is listed after {earlier}, which matches it",
                    e.path
                );
            }
            seen.push(e.path);
        }
    }
}
