//! Idempotency records: the answer given to a request with an
//! `Idempotency-Key`, replayed to every retry of it.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Bytea, Jsonb, Text};
use diesel_async::RunQueryDsl;

use super::{Repository, RepositoryError};
use crate::schema::idempotency_keys;

pub struct StoredResponse {
    pub request_hash: Vec<u8>,
    pub response: serde_json::Value,
}

impl Repository {
    pub async fn idempotent_response(
        &self,
        tenant: &str,
        scope: &str,
        key: &str,
    ) -> Result<Option<StoredResponse>, RepositoryError> {
        let mut conn = self.pool.get().await?;
        let row: Option<(Vec<u8>, serde_json::Value)> = idempotency_keys::table
            .find((tenant, scope, key))
            .select((idempotency_keys::request_hash, idempotency_keys::response))
            .first(&mut conn)
            .await
            .optional()?;
        Ok(row.map(|(request_hash, response)| StoredResponse {
            request_hash,
            response,
        }))
    }

    /// Records the answer to a published event request; a concurrent twin
    /// that got there first wins, and both answers are the same anyway (same
    /// ids, deduplicated by JetStream).
    ///
    /// The commit does not wait for the WAL to reach the disk
    /// (`synchronous_commit = off` for this transaction only): that wait, an
    /// fsync of some milliseconds shared by every request with a key, was on
    /// the answer's path. What is given up is small and covered elsewhere.
    /// The record only matters to a retry; only a PostgreSQL crash can lose
    /// it, and then only for answers of the last moments before the crash
    /// (the WAL writer flushes within `3 × wal_writer_delay`, 600 ms by
    /// default). A retry of such a request within `SB_DEDUP_WINDOW` (2
    /// minutes) publishes the same event id again, which JetStream stores once
    /// and answers with the first sequence: the same answer. Nothing
    /// acknowledged can be lost either way: the events themselves are in
    /// JetStream before this runs.
    pub async fn remember_response(
        &self,
        tenant: &str,
        scope: &str,
        key: &str,
        request_hash: &[u8],
        response: &serde_json::Value,
    ) -> Result<(), RepositoryError> {
        let mut conn = self.pool.get().await?;
        RememberResponse {
            tenant,
            scope,
            key,
            request_hash,
            response,
        }
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

/// The idempotency insert, with `set_config(…, true)` in a subquery so the
/// setting holds for this one statement's implicit transaction (one round
/// trip, and nothing leaks into the session, pooled or not). Written as a
/// query type of its own rather than `sql_query` so that diesel prepares it
/// once per connection: raw SQL is parsed and planned on every request.
struct RememberResponse<'a> {
    tenant: &'a str,
    scope: &'a str,
    key: &'a str,
    request_hash: &'a [u8],
    response: &'a serde_json::Value,
}

impl QueryId for RememberResponse<'_> {
    type QueryId = RememberResponse<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for RememberResponse<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO idempotency_keys (tenant_id, scope, key, request_hash, response) SELECT ",
        );
        out.push_bind_param::<Text, _>(self.tenant)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.scope)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.key)?;
        out.push_sql(", ");
        out.push_bind_param::<Bytea, _>(self.request_hash)?;
        out.push_sql(", ");
        out.push_bind_param::<Jsonb, _>(self.response)?;
        out.push_sql(
            " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit \
             ON CONFLICT DO NOTHING",
        );
        Ok(())
    }
}
