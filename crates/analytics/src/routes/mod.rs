//! analytics' HTTP API, one file per resource. Every handler: who calls
//! ([`switchboard_platform::callers`]: the tenant's API key, or a browser
//! token with the permission the endpoint names), the query checked (a bad
//! parameter is `400` naming it and what it takes), the repository, the
//! answer. Failures map to problem+json in one place ([`Failure`]).

pub mod analytics;
pub mod connections;
pub mod openapi;
pub mod tasks;

use actix_web::web;
use switchboard_platform::api_error;
use switchboard_platform::callers::CallerError;
use switchboard_platform::problem::{ApiError, Invalid, Problem};

pub use switchboard_platform::http::Endpoint;

use crate::repository::RepositoryError;

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Caller(#[from] CallerError),
    #[error(transparent)]
    Query(#[from] Invalid),
    #[error("the projection's database failed")]
    Repository(#[from] RepositoryError),
}

impl ApiError for Failure {
    fn problem(&self) -> Option<Problem> {
        Some(match self {
            Self::Caller(e) => e.problem(),
            Self::Query(e) => Problem::invalid_query(e.field.clone(), e.rule.clone()),
            Self::Repository(e) => return e.problem("nothing was read"),
        })
    }
}

api_error!(Failure);

/// Every endpoint of analytics' API (operational ones are the platform's).
pub fn endpoints() -> Vec<Endpoint> {
    [
        analytics::endpoints(),
        tasks::endpoints(),
        connections::endpoints(),
        openapi::endpoints(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    switchboard_platform::http::mount(cfg, endpoints());
}

/// `limit` of a list: 1 to 500, 50 by default.
pub fn limit(value: Option<&String>) -> Result<i64, Invalid> {
    match value {
        None => Ok(50),
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=500).contains(l))
            .ok_or_else(|| Invalid::new("limit", "must be a whole number from 1 to 500")),
    }
}
