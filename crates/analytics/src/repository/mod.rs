//! PostgreSQL access for analytics (schema `analytics`, its own tables
//! only), one file per aggregate. Handlers and the consumer never write SQL.

pub mod connections;
pub mod figures;
pub mod projection;
pub mod tasks;

use switchboard_platform::db::PgPool;
pub use switchboard_platform::db::RepositoryError;

/// Cloneable access to analytics' tables.
#[derive(Clone)]
pub struct Repository {
    pub pool: PgPool,
}
