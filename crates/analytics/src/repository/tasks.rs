//! Tasks for the tasks answer: those of a tenant created since a moment,
//! on the (tenant, created_at) index; and how many run now.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Double, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;

use super::{Repository, RepositoryError};
use crate::domain::tasks::TaskRow;

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    workflow: String,
    #[diesel(sql_type = Nullable<Text>)]
    agent: Option<String>,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<BigInt>)]
    duration_ms: Option<i64>,
    #[diesel(sql_type = BigInt)]
    tokens: i64,
    #[diesel(sql_type = Double)]
    cost: f64,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

impl Repository {
    /// `tenant`'s tasks created at `since` or later (all when `None`).
    pub async fn tasks_since(
        &self,
        tenant: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<TaskRow>, RepositoryError> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT workflow, agent, status, created_at, duration_ms, tokens, cost \
             FROM analytics.tasks WHERE tenant_id = $1 \
               AND ($2::timestamptz IS NULL OR created_at >= $2)",
        )
        .bind::<Text, _>(tenant)
        .bind::<Nullable<Timestamptz>, _>(since)
        .load(&mut conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| TaskRow {
                workflow: r.workflow,
                agent: r.agent,
                status: r.status,
                created_at: r.created_at,
                duration_ms: r.duration_ms,
                tokens: r.tokens,
                cost: r.cost,
            })
            .collect())
    }

    /// How many of `tenant`'s tasks run now.
    pub async fn tasks_running(&self, tenant: &str) -> Result<u64, RepositoryError> {
        let mut conn = self.pool.get().await?;
        let c: Vec<Count> = diesel::sql_query(
            "SELECT COUNT(*)::int8 AS n FROM analytics.tasks \
             WHERE tenant_id = $1 AND status = 'running'",
        )
        .bind::<Text, _>(tenant)
        .load(&mut conn)
        .await?;
        Ok(<[_]>::first(&c).map_or(0, |c| c.n.max(0) as u64))
    }
}
