//! ingest's HTTP API, one file per resource. Each handler: parse → domain →
//! repository/publish → response; every error is a problem+json [`Problem`].

pub mod admin;
pub mod auth;
pub mod events;

use std::sync::Arc;

use switchboard_platform::Problem;
use switchboard_platform::nats::Bus;
use switchboard_platform::problem::internal_error;

use crate::config::Settings;
use crate::repository::{Repository, RepositoryError};

/// What every handler reaches: the database, NATS and the settings.
#[derive(Clone)]
pub struct AppState {
    pub repo: Repository,
    pub bus: Bus,
    pub settings: Arc<Settings>,
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

/// Parses a JSON body with serde's message, which names the field and where.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("body is not valid JSON for this endpoint: {e}")))
}

pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    admin::configure(cfg);
    events::configure(cfg);
}
