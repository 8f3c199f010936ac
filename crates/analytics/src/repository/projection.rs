//! Applying a batch of domain facts in one transaction: each suggestion
//! row and each per-day cell read-modified-written with set-based
//! statements (a few per batch, however large), the newest fact winning,
//! so a redelivered or repeated fact changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use diesel::sql_types::{Array, BigInt, Date, Double, Integer, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, RunQueryDsl};
use switchboard_proto::facts::{ConnectionFact, TaskFact};

use super::{Repository, RepositoryError};

/// A suggestion as the projection keeps it.
#[derive(Debug, Clone, PartialEq, diesel::QueryableByName)]
pub struct SuggestionRow {
    #[diesel(sql_type = Text)]
    pub tenant_id: String,
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub agent_type: String,
    #[diesel(sql_type = Text)]
    pub priority: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Double)]
    pub estimated_revenue: f64,
    #[diesel(sql_type = Double)]
    pub confidence_score: f64,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

impl SuggestionRow {
    fn cell(&self) -> CellKey {
        (
            self.tenant_id.clone(),
            self.created_at.date_naive(),
            self.agent_type.clone(),
            self.priority.clone(),
            self.status.clone(),
        )
    }

    /// Whether `self` (a fact) replaces `old`: it is newer, or as new and
    /// different (the same fact again changes nothing).
    fn replaces(&self, old: &SuggestionRow) -> bool {
        self.updated_at > old.updated_at || (self.updated_at == old.updated_at && self != old)
    }
}

/// What one batch holds, in stream order.
#[derive(Debug, Default)]
pub struct Batch {
    pub suggestions: Vec<SuggestionRow>,
    /// (tenant, fact, closed)
    pub connections: Vec<(String, ConnectionFact, bool)>,
    pub tasks: Vec<(String, TaskFact)>,
    /// The newest stream sequence per tenant.
    pub versions: HashMap<String, u64>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.suggestions.is_empty()
            && self.connections.is_empty()
            && self.tasks.is_empty()
            && self.versions.is_empty()
    }
}

/// A per-day cell's key: (tenant, day, agent type, priority, status).
type CellKey = (String, NaiveDate, String, String, String);

#[derive(Default)]
struct CellDelta {
    count: i64,
    revenue: f64,
    confidence: f64,
}

impl Repository {
    /// Applies `batch`; answers the tenants whose suggestion figures
    /// changed.
    pub async fn apply(&self, batch: &Batch) -> Result<BTreeSet<String>, RepositoryError> {
        let mut conn = self.pool.get().await?;
        let changed = conn
            .transaction::<_, RepositoryError, _>(async |conn| {
                let changed = apply_suggestions(conn, &batch.suggestions).await?;
                apply_connections(conn, &batch.connections).await?;
                apply_tasks(conn, &batch.tasks).await?;
                apply_versions(conn, &batch.versions).await?;
                Ok(changed)
            })
            .await?;
        Ok(changed)
    }
}

type Conn = diesel_async::AsyncPgConnection;

async fn apply_suggestions(
    conn: &mut Conn,
    facts: &[SuggestionRow],
) -> Result<BTreeSet<String>, RepositoryError> {
    if facts.is_empty() {
        return Ok(BTreeSet::new());
    }
    // The rows in play, locked in key order (two instances never wait for
    // each other in a circle).
    let keys: BTreeSet<(&str, &str)> = facts
        .iter()
        .map(|f| (f.tenant_id.as_str(), f.id.as_str()))
        .collect();
    let (tenants, ids): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    let existing: Vec<SuggestionRow> = diesel::sql_query(
        "SELECT s.tenant_id, s.id, s.agent_type, s.priority, s.status, s.estimated_revenue, \
         s.confidence_score, s.created_at, s.updated_at \
         FROM analytics.suggestions s \
         JOIN unnest($1::text[], $2::text[]) AS k(tenant_id, id) \
           ON s.tenant_id = k.tenant_id AND s.id = k.id \
         ORDER BY s.tenant_id, s.id FOR UPDATE OF s",
    )
    .bind::<Array<Text>, _>(&tenants)
    .bind::<Array<Text>, _>(&ids)
    .load(conn)
    .await?;
    let mut rows: HashMap<(String, String), SuggestionRow> = existing
        .into_iter()
        .map(|r| ((r.tenant_id.clone(), r.id.clone()), r))
        .collect();
    let mut dirty: BTreeSet<(String, String)> = BTreeSet::new();
    let mut cells: BTreeMap<CellKey, CellDelta> = BTreeMap::new();
    for fact in facts {
        let key = (fact.tenant_id.clone(), fact.id.clone());
        if let Some(old) = rows.get(&key) {
            if !fact.replaces(old) {
                continue;
            }
            let d = cells.entry(old.cell()).or_default();
            d.count -= 1;
            d.revenue -= old.estimated_revenue;
            d.confidence -= old.confidence_score;
        }
        let d = cells.entry(fact.cell()).or_default();
        d.count += 1;
        d.revenue += fact.estimated_revenue;
        d.confidence += fact.confidence_score;
        rows.insert(key.clone(), fact.clone());
        dirty.insert(key);
    }
    if dirty.is_empty() {
        return Ok(BTreeSet::new());
    }
    let written: Vec<&SuggestionRow> = dirty.iter().map(|k| &rows[k]).collect();
    diesel::sql_query(
        "INSERT INTO analytics.suggestions (tenant_id, id, agent_type, priority, status, \
         estimated_revenue, confidence_score, created_at, updated_at) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
           $6::float8[], $7::float8[], $8::timestamptz[], $9::timestamptz[]) \
         ON CONFLICT (tenant_id, id) DO UPDATE SET agent_type = excluded.agent_type, \
           priority = excluded.priority, status = excluded.status, \
           estimated_revenue = excluded.estimated_revenue, \
           confidence_score = excluded.confidence_score, created_at = excluded.created_at, \
           updated_at = excluded.updated_at",
    )
    .bind::<Array<Text>, _>(
        written
            .iter()
            .map(|r| r.tenant_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(written.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(
        written
            .iter()
            .map(|r| r.agent_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(
        written
            .iter()
            .map(|r| r.priority.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(
        written
            .iter()
            .map(|r| r.status.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Double>, _>(
        written
            .iter()
            .map(|r| r.estimated_revenue)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Double>, _>(
        written
            .iter()
            .map(|r| r.confidence_score)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Timestamptz>, _>(written.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(written.iter().map(|r| r.updated_at).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    let cells: Vec<(&CellKey, &CellDelta)> = cells
        .iter()
        .filter(|(_, d)| d.count != 0 || d.revenue != 0.0 || d.confidence != 0.0)
        .collect();
    diesel::sql_query(
        "INSERT INTO analytics.suggestion_days AS d (tenant_id, day, agent_type, priority, \
         status, count, revenue, confidence) \
         SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[], \
           $6::int8[], $7::float8[], $8::float8[]) \
         ON CONFLICT (tenant_id, day, agent_type, priority, status) DO UPDATE SET \
           count = d.count + excluded.count, revenue = d.revenue + excluded.revenue, \
           confidence = d.confidence + excluded.confidence",
    )
    .bind::<Array<Text>, _>(cells.iter().map(|(k, _)| k.0.as_str()).collect::<Vec<_>>())
    .bind::<Array<Date>, _>(cells.iter().map(|(k, _)| k.1).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(cells.iter().map(|(k, _)| k.2.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(cells.iter().map(|(k, _)| k.3.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(cells.iter().map(|(k, _)| k.4.as_str()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(cells.iter().map(|(_, d)| d.count).collect::<Vec<_>>())
    .bind::<Array<Double>, _>(cells.iter().map(|(_, d)| d.revenue).collect::<Vec<_>>())
    .bind::<Array<Double>, _>(cells.iter().map(|(_, d)| d.confidence).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    // An emptied cell goes: no sum's rounding residue outlives its last
    // suggestion.
    let changed: BTreeSet<String> = dirty.iter().map(|(t, _)| t.clone()).collect();
    let changed_tenants: Vec<&str> = changed.iter().map(String::as_str).collect();
    diesel::sql_query(
        "DELETE FROM analytics.suggestion_days WHERE tenant_id = ANY($1::text[]) AND count <= 0",
    )
    .bind::<Array<Text>, _>(&changed_tenants)
    .execute(conn)
    .await?;
    Ok(changed)
}

async fn apply_connections(
    conn: &mut Conn,
    facts: &[(String, ConnectionFact, bool)],
) -> Result<(), RepositoryError> {
    if facts.is_empty() {
        return Ok(());
    }
    // The last word per connection in this batch; a close outranks an open.
    let mut last: BTreeMap<(&str, &str), &(String, ConnectionFact, bool)> = BTreeMap::new();
    for f in facts {
        let key = (f.0.as_str(), f.1.conn_id.as_str());
        match last.get(&key) {
            Some(prev) if prev.2 && !f.2 => {}
            _ => {
                last.insert(key, f);
            }
        }
    }
    let v: Vec<&&(String, ConnectionFact, bool)> = last.values().collect();
    let ms = |t: i64| DateTime::<Utc>::from_timestamp_millis(t).unwrap_or_default();
    diesel::sql_query(
        "INSERT INTO analytics.connections AS c (tenant_id, conn_id, sub, ip, user_agent, \
         opened_at, closed_at, close_code) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
           $6::timestamptz[], $7::timestamptz[], $8::int4[]) \
         ON CONFLICT (tenant_id, conn_id) DO UPDATE SET \
           closed_at = COALESCE(c.closed_at, excluded.closed_at), \
           close_code = COALESCE(c.close_code, excluded.close_code)",
    )
    .bind::<Array<Text>, _>(v.iter().map(|f| f.0.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(v.iter().map(|f| f.1.conn_id.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(v.iter().map(|f| f.1.sub.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(v.iter().map(|f| f.1.ip.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(
        v.iter()
            .map(|f| f.1.user_agent.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Timestamptz>, _>(v.iter().map(|f| ms(f.1.opened_at_ms)).collect::<Vec<_>>())
    .bind::<Array<Nullable<Timestamptz>>, _>(
        v.iter()
            .map(|f| f.1.closed_at_ms.filter(|_| f.2).map(ms))
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Integer>>, _>(
        v.iter()
            .map(|f| f.1.close_code.filter(|_| f.2).map(i32::from))
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

async fn apply_tasks(conn: &mut Conn, facts: &[(String, TaskFact)]) -> Result<(), RepositoryError> {
    if facts.is_empty() {
        return Ok(());
    }
    let mut last: BTreeMap<(&str, &str), &(String, TaskFact)> = BTreeMap::new();
    for f in facts {
        let key = (f.0.as_str(), f.1.task_id.as_str());
        if last
            .get(&key)
            .is_none_or(|p| p.1.updated_at_ms <= f.1.updated_at_ms)
        {
            last.insert(key, f);
        }
    }
    let v: Vec<&&(String, TaskFact)> = last.values().collect();
    let ms = |t: i64| DateTime::<Utc>::from_timestamp_millis(t).unwrap_or_default();
    let duration = |t: &TaskFact| match (t.started_at_ms, t.finished_at_ms) {
        (Some(s), Some(f)) if f >= s => Some(f - s),
        _ => None,
    };
    diesel::sql_query(
        "INSERT INTO analytics.tasks AS t (tenant_id, task_id, workflow, agent, status, \
         created_at, started_at, finished_at, duration_ms, tokens, cost, updated_at_ms) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
           $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::int8[], $10::int8[], \
           $11::float8[], $12::int8[]) \
         ON CONFLICT (tenant_id, task_id) DO UPDATE SET workflow = excluded.workflow, \
           agent = excluded.agent, status = excluded.status, started_at = excluded.started_at, \
           finished_at = excluded.finished_at, duration_ms = excluded.duration_ms, \
           tokens = excluded.tokens, cost = excluded.cost, updated_at_ms = excluded.updated_at_ms \
         WHERE excluded.updated_at_ms >= t.updated_at_ms",
    )
    .bind::<Array<Text>, _>(v.iter().map(|f| f.0.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(v.iter().map(|f| f.1.task_id.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(v.iter().map(|f| f.1.workflow.as_str()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(v.iter().map(|f| f.1.agent.as_deref()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(v.iter().map(|f| f.1.status.as_str()).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(v.iter().map(|f| ms(f.1.created_at_ms)).collect::<Vec<_>>())
    .bind::<Array<Nullable<Timestamptz>>, _>(
        v.iter()
            .map(|f| f.1.started_at_ms.map(ms))
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Timestamptz>>, _>(
        v.iter()
            .map(|f| f.1.finished_at_ms.map(ms))
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<BigInt>>, _>(v.iter().map(|f| duration(&f.1)).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(
        v.iter()
            .map(|f| i64::try_from(f.1.tokens).unwrap_or(i64::MAX))
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Double>, _>(v.iter().map(|f| f.1.cost).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(v.iter().map(|f| f.1.updated_at_ms).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

async fn apply_versions(
    conn: &mut Conn,
    versions: &HashMap<String, u64>,
) -> Result<(), RepositoryError> {
    if versions.is_empty() {
        return Ok(());
    }
    let (tenants, seqs): (Vec<&str>, Vec<i64>) = versions
        .iter()
        .map(|(t, s)| (t.as_str(), *s as i64))
        .unzip();
    diesel::sql_query(
        "INSERT INTO analytics.tenant_versions AS v (tenant_id, version) \
         SELECT * FROM unnest($1::text[], $2::int8[]) \
         ON CONFLICT (tenant_id) DO UPDATE SET version = GREATEST(v.version, excluded.version)",
    )
    .bind::<Array<Text>, _>(&tenants)
    .bind::<Array<BigInt>, _>(&seqs)
    .execute(conn)
    .await?;
    Ok(())
}
