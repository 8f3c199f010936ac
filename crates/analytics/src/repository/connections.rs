//! The connection audit: who connected, from where, since when, for how
//! long — newest first, keyset-paginated on (opened_at, conn_id).

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;

use super::{Repository, RepositoryError};

#[derive(Debug, Clone, diesel::QueryableByName, serde::Serialize)]
pub struct ConnectionRow {
    #[diesel(sql_type = Text)]
    pub conn_id: String,
    #[diesel(sql_type = Text)]
    pub sub: String,
    #[diesel(sql_type = Text)]
    pub ip: String,
    #[diesel(sql_type = Text)]
    pub user_agent: String,
    #[diesel(sql_type = Timestamptz)]
    pub opened_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub closed_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub close_code: Option<i32>,
}

/// Which connections to list.
pub struct ConnectionFilter {
    /// `Some(true)`: still open; `Some(false)`: closed.
    pub active: Option<bool>,
    pub sub: Option<String>,
}

impl Repository {
    /// Up to `limit` connections of `tenant` after `after` (newest first).
    pub async fn connections(
        &self,
        tenant: &str,
        filter: &ConnectionFilter,
        after: Option<(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<ConnectionRow>, RepositoryError> {
        let mut conn = self.pool.get().await?;
        let (at, id) = match &after {
            Some((at, id)) => (Some(*at), Some(id.as_str())),
            None => (None, None),
        };
        Ok(diesel::sql_query(
            "SELECT conn_id, sub, ip, user_agent, opened_at, closed_at, close_code \
             FROM analytics.connections \
             WHERE tenant_id = $1 \
               AND ($2::bool IS NULL OR (closed_at IS NULL) = $2) \
               AND ($3::text IS NULL OR sub = $3) \
               AND ($4::timestamptz IS NULL OR (opened_at, conn_id) < ($4, $5)) \
             ORDER BY opened_at DESC, conn_id DESC LIMIT $6",
        )
        .bind::<Text, _>(tenant)
        .bind::<Nullable<Bool>, _>(filter.active)
        .bind::<Nullable<Text>, _>(filter.sub.as_deref())
        .bind::<Nullable<Timestamptz>, _>(at)
        .bind::<Nullable<Text>, _>(id)
        .bind::<BigInt, _>(limit)
        .load(&mut conn)
        .await?)
    }
}
