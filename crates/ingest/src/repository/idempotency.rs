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

    /// Records the answer; a concurrent twin that got there first wins, and
    /// both answers are the same anyway (same ids, deduplicated by JetStream).
    pub async fn remember_response(
        &self,
        tenant: &str,
        scope: &str,
        key: &str,
        request_hash: &[u8],
        response: &serde_json::Value,
    ) -> Result<(), RepositoryError> {
        let mut conn = self.pool.get().await?;
        diesel::insert_into(idempotency_keys::table)
            .values((
                idempotency_keys::tenant_id.eq(tenant),
                idempotency_keys::scope.eq(scope),
                idempotency_keys::key.eq(key),
                idempotency_keys::request_hash.eq(request_hash),
                idempotency_keys::response.eq(response),
            ))
            .on_conflict_do_nothing()
            .execute(&mut conn)
            .await?;
        Ok(())
    }
}
