//! PostgreSQL access for ingest, one file per aggregate. Handlers never
//! write SQL.

pub mod announcements;
pub mod api_keys;
pub mod idempotency;
pub mod notifications;
pub mod suggestions;
pub mod tenants;

pub use switchboard_platform::db::RepositoryError;
use switchboard_platform::db::{self, DbSetupError, PgPool};

/// Cloneable access to ingest's tables.
#[derive(Clone)]
pub struct Repository {
    pub pool: PgPool,
}

impl Repository {
    /// A pool of up to `size` connections.
    pub fn connect(url: &str, size: usize) -> Result<Self, DbSetupError> {
        Ok(Self {
            pool: db::pool(url, size)?,
        })
    }
}
