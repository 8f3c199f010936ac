//! PostgreSQL: a pool of diesel-async connections, and embedded migrations
//! run at start-up (each service embeds only its own).

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::{BuildError, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

pub type PgPool = Pool<AsyncPgConnection>;

#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("cannot build the PostgreSQL pool")]
    Pool(#[source] BuildError),
    #[error("cannot connect to PostgreSQL to migrate")]
    Connect(#[source] diesel::ConnectionError),
    #[error("migrations failed")]
    Migrate(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot take the migration lock")]
    Lock(#[source] diesel::result::Error),
    #[error("the migration task panicked")]
    Join(#[source] tokio::task::JoinError),
}

/// A pool of up to `max_size` connections. A connection taken from it is
/// not probed with a query first (deadpool's default costs every
/// statement a second round trip: measured, half of PostgreSQL's CPU at
/// 1,000 keyed publishes/s); one that broke is dropped when it is returned,
/// and the one statement that found it broken fails as a closed connection
/// ([`is_closed_connection`]), which callers answer as "unavailable, retry".
pub fn pool(url: &str, max_size: usize) -> Result<PgPool, DbSetupError> {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    Pool::builder(manager)
        .max_size(max_size)
        .build()
        .map_err(DbSetupError::Pool)
}

/// Runs pending migrations. The harness blocks, so it runs on a blocking
/// thread with its own connection.
pub async fn migrate(url: &str, migrations: EmbeddedMigrations) -> Result<(), DbSetupError> {
    use diesel_async::AsyncConnection as _;
    use diesel_async::RunQueryDsl;
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .map_err(DbSetupError::Connect)?;
    // Instances of several services may start at once against one database;
    // the session lock serialises them and is released with the connection.
    diesel::sql_query("SELECT pg_advisory_lock(7243501)")
        .execute(&mut conn)
        .await
        .map_err(DbSetupError::Lock)?;
    tokio::task::spawn_blocking(move || {
        let mut harness = diesel_async::AsyncMigrationHarness::new(conn);
        harness
            .run_pending_migrations(migrations)
            .map(|_| ())
            .map_err(DbSetupError::Migrate)
    })
    .await
    .map_err(DbSetupError::Join)?
}

/// True when a pooled connection answers `SELECT 1`.
pub async fn ping(pool: &PgPool) -> bool {
    use diesel_async::RunQueryDsl;
    let Ok(mut conn) = pool.get().await else {
        return false;
    };
    diesel::sql_query("SELECT 1")
        .execute(&mut conn)
        .await
        .is_ok()
}

/// Whether a query failed because its connection to PostgreSQL was lost
/// (PostgreSQL restarted, or the network broke): nothing was done, and a
/// retry takes a fresh connection.
pub fn is_closed_connection(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ClosedConnection,
            _
        )
    )
}

/// A repository call that failed: no connection could be taken, or the
/// statement failed.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("no PostgreSQL connection available")]
    Pool(#[from] diesel_async::pooled_connection::deadpool::PoolError),
    #[error("query failed")]
    Query(#[from] diesel::result::Error),
}

impl RepositoryError {
    /// The failure as a client sees it: `503` when PostgreSQL cannot be
    /// reached or the connection dropped (retry), `None` (an unexpected
    /// `500`, logged with an id) otherwise. `outcome` tells the client what
    /// the failure left behind, e.g. "nothing was stored".
    pub fn problem(&self, outcome: &str) -> Option<crate::Problem> {
        match self {
            Self::Pool(_) => Some(crate::Problem::unavailable(format!(
                "the database is unreachable; {outcome}, retry later"
            ))),
            Self::Query(q) if is_closed_connection(q) => Some(crate::Problem::unavailable(
                format!("the database connection was lost; {outcome}, retry"),
            )),
            Self::Query(_) => None,
        }
    }
}
