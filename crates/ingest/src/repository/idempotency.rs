//! Idempotency records: the answer given to a request with an
//! `Idempotency-Key`, replayed to every retry of it.

use diesel::prelude::*;
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
    /// The commit does not wait for the WAL to reach the disk (the
    /// `records` pool's sessions run with `synchronous_commit = off`): that
    /// wait, an fsync of some milliseconds shared by every request with a
    /// key, was on the answer's path. What is given up is small and covered
    /// elsewhere. The record only matters to a retry; only a PostgreSQL
    /// crash can lose it, and then only for answers of the last moments
    /// before the crash (the WAL writer flushes within `3 ×
    /// wal_writer_delay`, 600 ms by default). A retry of such a request
    /// within `SB_DEDUP_WINDOW` (2 minutes) publishes the same event id
    /// again, which JetStream stores once and answers with the first
    /// sequence: the same answer. Nothing acknowledged can be lost either
    /// way: the events themselves are in JetStream before this runs.
    ///
    /// A plain insert, so the statement is prepared once per connection.
    pub async fn remember_response(
        &self,
        tenant: &str,
        scope: &str,
        key: &str,
        request_hash: &[u8],
        response: &serde_json::Value,
    ) -> Result<(), RepositoryError> {
        use idempotency_keys::dsl;
        let mut conn = self.records.get().await?;
        diesel::insert_into(idempotency_keys::table)
            .values((
                dsl::tenant_id.eq(tenant),
                dsl::scope.eq(scope),
                dsl::key.eq(key),
                dsl::request_hash.eq(request_hash),
                dsl::response.eq(response),
            ))
            .on_conflict_do_nothing()
            .execute(&mut conn)
            .await?;
        Ok(())
    }
}
