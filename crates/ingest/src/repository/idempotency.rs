//! Idempotency records: the answer given to a request with an
//! `Idempotency-Key`, replayed to every retry of it.
//!
//! A request that publishes first *claims* its key (a record without an
//! answer), then publishes, then *completes* the record with its answer. A
//! retry therefore always knows whether an earlier attempt may have stored
//! something — even when that attempt's answer was never written (the
//! process died, or PostgreSQL failed after JetStream's ack) — and never
//! stores it a second time.
//!
//! Both statements commit without waiting for the WAL to reach the disk
//! (`synchronous_commit = off` for that statement only): that wait, an
//! fsync of some milliseconds, was on every keyed answer's path. Only a
//! PostgreSQL crash can lose such a commit, and then only those of its last
//! moments (the WAL writer flushes within `3 × wal_writer_delay`, 600 ms by
//! default); a retry within `SB_DEDUP_WINDOW` of such a request publishes the
//! same event ids again, which JetStream stores once.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Bytea, Jsonb, Text};
use diesel_async::RunQueryDsl;

use super::{Repository, RepositoryError};
use crate::schema::idempotency_keys;

/// Who holds a key.
#[derive(Debug)]
pub enum Claim {
    /// Nobody did: it is this request's now, pending until completed.
    New,
    /// An earlier request (or a concurrent twin): its body's hash, its
    /// answer once written, and when it claimed the key.
    Earlier {
        request_hash: Vec<u8>,
        response: Option<serde_json::Value>,
        claimed_at: DateTime<Utc>,
    },
}

pub struct StoredResponse {
    pub request_hash: Vec<u8>,
    pub response: Option<serde_json::Value>,
}

impl Repository {
    pub async fn idempotent_response(
        &self,
        tenant: &str,
        scope: &str,
        key: &str,
    ) -> Result<Option<StoredResponse>, RepositoryError> {
        let mut conn = self.pool.get().await?;
        let row: Option<(Vec<u8>, Option<serde_json::Value>)> = idempotency_keys::table
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

    /// Claims `key` for a request whose body hashes to `request_hash`, or
    /// says who holds it: one insert for a new key (the usual case), a read
    /// after it for a retry.
    pub async fn claim_key(
        &self,
        tenant: &str,
        scope: &str,
        key: &str,
        request_hash: &[u8],
    ) -> Result<Claim, RepositoryError> {
        let mut conn = self.pool.get().await?;
        let claimed = ClaimKey {
            tenant,
            scope,
            key,
            request_hash,
        }
        .execute(&mut conn)
        .await?;
        if claimed == 1 {
            return Ok(Claim::New);
        }
        let (request_hash, response, claimed_at) = idempotency_keys::table
            .find((tenant, scope, key))
            .select((
                idempotency_keys::request_hash,
                idempotency_keys::response,
                idempotency_keys::created_at,
            ))
            .first::<(Vec<u8>, Option<serde_json::Value>, DateTime<Utc>)>(&mut conn)
            .await?;
        Ok(Claim::Earlier {
            request_hash,
            response,
            claimed_at,
        })
    }

    /// Writes the answers of many claimed keys in one statement.
    pub async fn complete_keys(&self, answers: &[Answer]) -> Result<(), RepositoryError> {
        if answers.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.get().await?;
        CompleteKeys::new(answers).execute(&mut conn).await?;
        Ok(())
    }

    /// Writes the answer of the request that claimed `key`.
    pub async fn complete_key(
        &self,
        tenant: &str,
        scope: &str,
        key: &str,
        response: &serde_json::Value,
    ) -> Result<(), RepositoryError> {
        let mut conn = self.pool.get().await?;
        CompleteKey {
            tenant,
            scope,
            key,
            response,
        }
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

/// The claim: a pending record, unless the key has one. Written as query
/// types of their own rather than `sql_query` so that diesel prepares them
/// once per connection (raw SQL is parsed and planned on every request);
/// `set_config(…, true)` in a subquery holds for this one statement's
/// implicit transaction and leaks into no pooled session.
struct ClaimKey<'a> {
    tenant: &'a str,
    scope: &'a str,
    key: &'a str,
    request_hash: &'a [u8],
}

impl QueryId for ClaimKey<'_> {
    type QueryId = ClaimKey<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for ClaimKey<'_> {
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
        out.push_sql(
            ", NULL FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit \
             ON CONFLICT DO NOTHING",
        );
        Ok(())
    }
}

/// A claimed key's answer, to be written.
#[derive(Debug, Clone)]
pub struct Answer {
    pub tenant: String,
    pub scope: String,
    pub key: String,
    pub response: serde_json::Value,
}

/// Many answers in one `UPDATE … FROM unnest(…)` (asynchronous commit),
/// column by column.
struct CompleteKeys<'a> {
    tenants: Vec<&'a str>,
    scopes: Vec<&'a str>,
    keys: Vec<&'a str>,
    responses: Vec<&'a serde_json::Value>,
}

impl<'a> CompleteKeys<'a> {
    fn new(answers: &'a [Answer]) -> Self {
        Self {
            tenants: answers.iter().map(|a| a.tenant.as_str()).collect(),
            scopes: answers.iter().map(|a| a.scope.as_str()).collect(),
            keys: answers.iter().map(|a| a.key.as_str()).collect(),
            responses: answers.iter().map(|a| &a.response).collect(),
        }
    }
}

impl QueryId for CompleteKeys<'_> {
    type QueryId = CompleteKeys<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for CompleteKeys<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        use diesel::sql_types::Array;
        out.push_sql(
            "UPDATE idempotency_keys AS k SET response = a.response \
             FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit, \
             unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.tenants)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.scopes)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.keys)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Jsonb>, _>(&self.responses)?;
        out.push_sql(
            ") AS a(tenant_id, scope, key, response) \
             WHERE k.tenant_id = a.tenant_id AND k.scope = a.scope AND k.key = a.key",
        );
        Ok(())
    }
}

struct CompleteKey<'a> {
    tenant: &'a str,
    scope: &'a str,
    key: &'a str,
    response: &'a serde_json::Value,
}

impl QueryId for CompleteKey<'_> {
    type QueryId = CompleteKey<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for CompleteKey<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE idempotency_keys SET response = ");
        out.push_bind_param::<Jsonb, _>(self.response)?;
        out.push_sql(
            " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit \
             WHERE ",
        );
        push_key(&mut out, self.tenant, self.scope, self.key)
    }
}

/// `tenant_id = … AND scope = … AND key = …`: one record.
fn push_key<'b>(
    out: &mut AstPass<'_, 'b, Pg>,
    tenant: &'b str,
    scope: &'b str,
    key: &'b str,
) -> QueryResult<()> {
    out.push_sql("tenant_id = ");
    out.push_bind_param::<Text, _>(tenant)?;
    out.push_sql(" AND scope = ");
    out.push_bind_param::<Text, _>(scope)?;
    out.push_sql(" AND key = ");
    out.push_bind_param::<Text, _>(key)?;
    Ok(())
}
