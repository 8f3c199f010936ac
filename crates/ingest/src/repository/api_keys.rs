//! API keys: looked up by hash (cached by `platform::apikeys`, which a revoke
//! empties on every instance); a revoked key matches nothing.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{Repository, RepositoryError};
use crate::schema::api_keys;

/// A key as listed: never its secret, which is not stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl Repository {
    /// The tenant that owns the live key with this hash, if any.
    pub async fn tenant_of_key(&self, key_hash: &[u8]) -> Result<Option<String>, RepositoryError> {
        let mut conn = self.pool.get().await?;
        Ok(api_keys::table
            .filter(api_keys::key_hash.eq(key_hash))
            .filter(api_keys::revoked_at.is_null())
            .select(api_keys::tenant_id)
            .first(&mut conn)
            .await
            .optional()?)
    }

    pub async fn create_api_key(
        &self,
        tenant: &str,
        id: &str,
        name: &str,
        key_hash: &[u8],
    ) -> Result<ApiKeyRow, RepositoryError> {
        let mut conn = self.pool.get().await?;
        Ok(diesel::insert_into(api_keys::table)
            .values((
                api_keys::id.eq(id),
                api_keys::tenant_id.eq(tenant),
                api_keys::name.eq(name),
                api_keys::key_hash.eq(key_hash),
            ))
            .returning(ApiKeyRow::as_returning())
            .get_result(&mut conn)
            .await?)
    }

    /// Live keys, newest first, `limit` after `after` (created_at, id).
    pub async fn list_api_keys(
        &self,
        tenant: &str,
        after: Option<(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<ApiKeyRow>, RepositoryError> {
        let mut conn = self.pool.get().await?;
        let mut q = api_keys::table
            .filter(api_keys::tenant_id.eq(tenant))
            .filter(api_keys::revoked_at.is_null())
            .select(ApiKeyRow::as_select())
            .into_boxed();
        if let Some((at, id)) = after {
            q = q.filter(
                api_keys::created_at
                    .lt(at)
                    .or(api_keys::created_at.eq(at).and(api_keys::id.lt(id))),
            );
        }
        Ok(q.order((api_keys::created_at.desc(), api_keys::id.desc()))
            .limit(limit)
            .load(&mut conn)
            .await?)
    }

    /// Revokes a live key; `false` when the tenant has no such live key.
    /// Revokes a live key; its hash, or `None` when there was no such key.
    pub async fn revoke_api_key(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>, RepositoryError> {
        let mut conn = self.pool.get().await?;
        Ok(diesel::update(
            api_keys::table
                .filter(api_keys::tenant_id.eq(tenant))
                .filter(api_keys::id.eq(id))
                .filter(api_keys::revoked_at.is_null()),
        )
        .set(api_keys::revoked_at.eq(diesel::dsl::now))
        .returning(api_keys::key_hash)
        .get_result(&mut conn)
        .await
        .optional()?)
    }
}
