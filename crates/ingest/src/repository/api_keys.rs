//! API keys: looked up by hash; a revoked key matches nothing.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{Repository, RepositoryError};
use crate::schema::api_keys;

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
}
