//! The suggestions answer's figures: one aggregate query over the per-day
//! cells of a range (SUM … FILTER, grouped by agent type, priority and day
//! at once), on the cells' primary key (tenant, day, …).

use chrono::NaiveDate;
use diesel::sql_types::{BigInt, Date, Double, Nullable, Text};
use diesel_async::RunQueryDsl;

use super::{Repository, RepositoryError};
use crate::domain::figures::{Groups, Totals};

#[derive(diesel::QueryableByName)]
struct GroupRow {
    #[diesel(sql_type = Nullable<Text>)]
    agent_type: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    priority: Option<String>,
    #[diesel(sql_type = Nullable<Date>)]
    day: Option<NaiveDate>,
    /// Which grouping set: 0 all, 1 agent, 2 priority, 3 day.
    #[diesel(sql_type = BigInt)]
    grouping: i64,
    #[diesel(sql_type = BigInt)]
    count: i64,
    #[diesel(sql_type = BigInt)]
    pending: i64,
    #[diesel(sql_type = BigInt)]
    executed: i64,
    #[diesel(sql_type = BigInt)]
    rejected: i64,
    #[diesel(sql_type = BigInt)]
    paused: i64,
    #[diesel(sql_type = Double)]
    revenue: f64,
    #[diesel(sql_type = Double)]
    executed_revenue: f64,
    #[diesel(sql_type = Double)]
    confidence: f64,
}

#[derive(diesel::QueryableByName)]
struct FirstDay {
    #[diesel(sql_type = Nullable<Date>)]
    day: Option<NaiveDate>,
}

#[derive(diesel::QueryableByName)]
struct Version {
    #[diesel(sql_type = BigInt)]
    version: i64,
}

/// A range's groups, with the figures' version (the newest stream
/// sequence applied for the tenant) and its first day.
pub struct RangeFigures {
    pub groups: Groups,
    pub version: u64,
    /// The day of the tenant's first suggestion (for `all`).
    pub first_day: Option<NaiveDate>,
}

const GROUPS: &str = "\
SELECT agent_type, priority, day, \
  (CASE WHEN GROUPING(agent_type, priority, day) = 7 THEN 0 \
        WHEN GROUPING(agent_type) = 0 THEN 1 \
        WHEN GROUPING(priority) = 0 THEN 2 ELSE 3 END)::int8 AS grouping, \
  COALESCE(SUM(count), 0)::int8 AS count, \
  COALESCE(SUM(count) FILTER (WHERE status = 'pending'), 0)::int8 AS pending, \
  COALESCE(SUM(count) FILTER (WHERE status = 'executed'), 0)::int8 AS executed, \
  COALESCE(SUM(count) FILTER (WHERE status = 'rejected'), 0)::int8 AS rejected, \
  COALESCE(SUM(count) FILTER (WHERE status = 'paused'), 0)::int8 AS paused, \
  COALESCE(SUM(revenue), 0)::float8 AS revenue, \
  COALESCE(SUM(revenue) FILTER (WHERE status = 'executed'), 0)::float8 AS executed_revenue, \
  COALESCE(SUM(confidence), 0)::float8 AS confidence \
FROM analytics.suggestion_days \
WHERE tenant_id = $1 AND day >= $2 \
GROUP BY GROUPING SETS ((), (agent_type), (priority), (day))";

impl Repository {
    /// The figures of `tenant`'s suggestions created on `since` or later
    /// (all of them when `None`), read in one snapshot with their version.
    pub async fn range_figures(
        &self,
        tenant: &str,
        since: Option<NaiveDate>,
    ) -> Result<RangeFigures, RepositoryError> {
        let mut conn = self.pool.get().await?;
        let since = since.unwrap_or(NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date"));
        let tenant = tenant.to_owned();
        conn.build_transaction()
            .repeatable_read()
            .read_only()
            .run::<_, RepositoryError, _>(async |conn| {
                let rows: Vec<GroupRow> = diesel::sql_query(GROUPS)
                    .bind::<Text, _>(&tenant)
                    .bind::<Date, _>(since)
                    .load(conn)
                    .await?;
                let first: Vec<FirstDay> = diesel::sql_query(
                    "SELECT MIN(day) AS day FROM analytics.suggestion_days WHERE tenant_id = $1",
                )
                .bind::<Text, _>(&tenant)
                .load(conn)
                .await?;
                let version: Vec<Version> = diesel::sql_query(
                    "SELECT version FROM analytics.tenant_versions WHERE tenant_id = $1",
                )
                .bind::<Text, _>(&tenant)
                .load(conn)
                .await?;
                let mut groups = Groups::default();
                for r in rows {
                    let t = Totals {
                        count: r.count.max(0) as u64,
                        pending: r.pending.max(0) as u64,
                        executed: r.executed.max(0) as u64,
                        rejected: r.rejected.max(0) as u64,
                        paused: r.paused.max(0) as u64,
                        revenue: r.revenue,
                        executed_revenue: r.executed_revenue,
                        confidence: r.confidence,
                    };
                    match (r.grouping, r.agent_type, r.priority, r.day) {
                        (1, Some(a), _, _) => groups.agents.push((a, t)),
                        (2, _, Some(p), _) => groups.priorities.push((p, t)),
                        (3, _, _, Some(d)) => groups.days.push((d, t)),
                        _ => groups.all = t,
                    }
                }
                Ok(RangeFigures {
                    groups,
                    version: <[_]>::first(&version).map_or(0, |v| v.version.max(0) as u64),
                    first_day: <[_]>::first(&first).and_then(|f| f.day),
                })
            })
            .await
    }
}
