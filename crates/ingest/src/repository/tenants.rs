//! Tenants: created with their first API key in one transaction, which
//! commits only once the tenant's public config is in KV `SB_TENANTS`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::{Repository, RepositoryError};
use crate::schema::{api_keys, tenants};

pub struct NewTenant<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub key_id: &'a str,
    pub key_name: &'a str,
    pub key_hash: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
pub enum CreateTenantError<E: std::error::Error + 'static> {
    #[error("tenant id is taken")]
    Taken,
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error("publishing the tenant's config failed")]
    Publish(#[source] E),
}

impl<E: std::error::Error + 'static> From<diesel::result::Error> for CreateTenantError<E> {
    fn from(e: diesel::result::Error) -> Self {
        match e {
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            ) => Self::Taken,
            e => Self::Repository(RepositoryError::Query(e)),
        }
    }
}

impl Repository {
    /// Inserts the tenant and its key, runs `publish` (the KV write) inside
    /// the transaction, and commits only if it succeeded.
    pub async fn create_tenant<E, F, Fut>(
        &self,
        new: NewTenant<'_>,
        publish: F,
    ) -> Result<DateTime<Utc>, CreateTenantError<E>>
    where
        E: std::error::Error + Send + 'static,
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = Result<(), E>> + Send,
    {
        let mut conn = self.pool.get().await.map_err(RepositoryError::from)?;
        conn.transaction::<_, CreateTenantError<E>, _>(async |conn| {
            let created_at: DateTime<Utc> = diesel::insert_into(tenants::table)
                .values((tenants::id.eq(new.id), tenants::name.eq(new.name)))
                .returning(tenants::created_at)
                .get_result(conn)
                .await?;
            diesel::insert_into(api_keys::table)
                .values((
                    api_keys::id.eq(new.key_id),
                    api_keys::tenant_id.eq(new.id),
                    api_keys::name.eq(new.key_name),
                    api_keys::key_hash.eq(new.key_hash),
                ))
                .execute(conn)
                .await?;
            publish().await.map_err(CreateTenantError::Publish)?;
            Ok(created_at)
        })
        .await
    }
}
