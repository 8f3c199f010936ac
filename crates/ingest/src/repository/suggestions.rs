//! Suggestions: a batch is inserted in one transaction together with its
//! idempotency record and the notifications it causes; responses move a
//! suggestion's status under a row lock, so of two concurrent responses
//! exactly one wins and the other sees the status it left.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::announcements::AnnouncementRow;
use super::notifications::NotificationRow;
use super::{Repository, RepositoryError};
use crate::schema::{
    announcements, idempotency_keys, notifications, suggestion_responses, suggestions,
};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = suggestions)]
pub struct SuggestionRow {
    pub id: String,
    pub tenant_id: String,
    pub batch_id: String,
    pub agent_type: String,
    pub title: String,
    pub description: String,
    pub estimated_revenue: f64,
    pub confidence_score: f64,
    pub priority: String,
    pub user_id: Option<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The answer to remember for a request with an `Idempotency-Key`.
pub struct IdempotencyRecord<'a> {
    pub scope: &'a str,
    pub key: &'a str,
    pub request_hash: &'a [u8],
    pub response: &'a serde_json::Value,
}

pub enum CreateOutcome {
    Created,
    /// The key was used before (or by a concurrent twin that committed
    /// first): nothing was inserted.
    Replayed {
        request_hash: Vec<u8>,
        response: serde_json::Value,
    },
}

#[derive(Debug, Default)]
pub struct SuggestionFilter {
    pub status: Option<String>,
    pub agent_type: Option<String>,
    pub priority: Option<String>,
    pub user_id: Option<String>,
}

pub struct NewResponse<'a> {
    pub id: &'a str,
    /// The outbox entry announcing the change: its id, and how the updated
    /// suggestion is written.
    pub announcement_id: &'a str,
    pub announce_as: fn(&SuggestionRow) -> serde_json::Value,
    pub action: &'a str,
    pub user_id: &'a str,
    pub note: Option<&'a str>,
    pub at: DateTime<Utc>,
}

pub enum RespondOutcome {
    Updated {
        suggestion: Box<SuggestionRow>,
        from: String,
    },
    /// The response is not possible in the suggestion's current status.
    Conflict(String),
    NotFound,
}

/// Bind parameters per statement stay far below PostgreSQL's 65535.
const INSERT_CHUNK: usize = 1000;

impl Repository {
    /// Inserts the whole batch or nothing. With an idempotency record, the
    /// record is inserted first: a retry (or a concurrent twin, which waits
    /// on the key's row lock) finds it and inserts nothing.
    pub async fn create_suggestions(
        &self,
        tenant: &str,
        rows: &[SuggestionRow],
        notes: &[NotificationRow],
        announce: &[AnnouncementRow],
        idempotency: Option<IdempotencyRecord<'_>>,
    ) -> Result<CreateOutcome, RepositoryError> {
        let mut conn = self.pool.get().await?;
        conn.transaction::<_, RepositoryError, _>(async |conn| {
            if let Some(rec) = idempotency {
                let inserted = diesel::insert_into(idempotency_keys::table)
                    .values((
                        idempotency_keys::tenant_id.eq(tenant),
                        idempotency_keys::scope.eq(rec.scope),
                        idempotency_keys::key.eq(rec.key),
                        idempotency_keys::request_hash.eq(rec.request_hash),
                        idempotency_keys::response.eq(rec.response),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
                if inserted == 0 {
                    let (request_hash, response): (Vec<u8>, Option<serde_json::Value>) =
                        idempotency_keys::table
                            .find((tenant, rec.scope, rec.key))
                            .select((idempotency_keys::request_hash, idempotency_keys::response))
                            .first(conn)
                            .await?;
                    return Ok(CreateOutcome::Replayed {
                        request_hash,
                        response: response.expect(
                            "suggestion records are written whole, in their batch's transaction",
                        ),
                    });
                }
            }
            for chunk in rows.chunks(INSERT_CHUNK) {
                diesel::insert_into(suggestions::table)
                    .values(chunk)
                    .execute(conn)
                    .await?;
            }
            for chunk in notes.chunks(INSERT_CHUNK) {
                diesel::insert_into(notifications::table)
                    .values(chunk)
                    .execute(conn)
                    .await?;
            }
            for chunk in announce.chunks(INSERT_CHUNK) {
                diesel::insert_into(announcements::table)
                    .values(chunk)
                    .execute(conn)
                    .await?;
            }
            Ok(CreateOutcome::Created)
        })
        .await
    }

    pub async fn suggestion(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<SuggestionRow>, RepositoryError> {
        let mut conn = self.pool.get().await?;
        Ok(suggestions::table
            .filter(suggestions::tenant_id.eq(tenant))
            .filter(suggestions::id.eq(id))
            .select(SuggestionRow::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    /// Newest first: `limit` suggestions after the keyset position `after`.
    pub async fn list_suggestions(
        &self,
        tenant: &str,
        filter: &SuggestionFilter,
        after: Option<(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<SuggestionRow>, RepositoryError> {
        use crate::schema::suggestions::dsl as s;
        let mut conn = self.pool.get().await?;
        let mut q = s::suggestions
            .filter(s::tenant_id.eq(tenant))
            .select(SuggestionRow::as_select())
            .into_boxed();
        if let Some(v) = &filter.status {
            q = q.filter(s::status.eq(v.clone()));
        }
        if let Some(v) = &filter.agent_type {
            q = q.filter(s::agent_type.eq(v.clone()));
        }
        if let Some(v) = &filter.priority {
            q = q.filter(s::priority.eq(v.clone()));
        }
        if let Some(v) = &filter.user_id {
            q = q.filter(s::user_id.eq(v.clone()));
        }
        if let Some((at, id)) = after {
            // `created_at <= at` bounds the index range; the OR settles ties.
            q = q
                .filter(s::created_at.le(at))
                .filter(s::created_at.lt(at).or(s::id.lt(id)));
        }
        Ok(q.order((s::created_at.desc(), s::id.desc()))
            .limit(limit)
            .load(&mut conn)
            .await?)
    }

    /// Applies a response if the suggestion's status is one of
    /// `allowed_from`, recording it. The row is locked for the check, so
    /// concurrent responses are applied one after the other.
    pub async fn respond(
        &self,
        tenant: &str,
        suggestion_id: &str,
        allowed_from: &[&str],
        to: &str,
        response: NewResponse<'_>,
    ) -> Result<RespondOutcome, RepositoryError> {
        let mut conn = self.pool.get().await?;
        conn.transaction::<_, RepositoryError, _>(async |conn| {
            let current: Option<String> = suggestions::table
                .filter(suggestions::tenant_id.eq(tenant))
                .filter(suggestions::id.eq(suggestion_id))
                .select(suggestions::status)
                .for_update()
                .first(conn)
                .await
                .optional()?;
            let Some(from) = current else {
                return Ok(RespondOutcome::NotFound);
            };
            if !allowed_from.contains(&from.as_str()) {
                return Ok(RespondOutcome::Conflict(from));
            }
            let suggestion = diesel::update(
                suggestions::table
                    .filter(suggestions::id.eq(suggestion_id))
                    .filter(suggestions::status.eq(&from)),
            )
            .set((
                suggestions::status.eq(to),
                suggestions::updated_at.eq(response.at),
            ))
            .returning(SuggestionRow::as_returning())
            .get_result(conn)
            .await?;
            diesel::insert_into(announcements::table)
                .values(AnnouncementRow {
                    id: response.announcement_id.to_owned(),
                    tenant_id: tenant.to_owned(),
                    event: "suggestion.updated".to_owned(),
                    key: response.id.to_owned(),
                    data: (response.announce_as)(&suggestion),
                })
                .execute(conn)
                .await?;
            diesel::insert_into(suggestion_responses::table)
                .values((
                    suggestion_responses::id.eq(response.id),
                    suggestion_responses::tenant_id.eq(tenant),
                    suggestion_responses::suggestion_id.eq(suggestion_id),
                    suggestion_responses::action.eq(response.action),
                    suggestion_responses::user_id.eq(response.user_id),
                    suggestion_responses::note.eq(response.note),
                    suggestion_responses::from_status.eq(&from),
                    suggestion_responses::to_status.eq(to),
                    suggestion_responses::created_at.eq(response.at),
                ))
                .execute(conn)
                .await?;
            Ok(RespondOutcome::Updated {
                suggestion: Box::new(suggestion),
                from,
            })
        })
        .await
    }
}
