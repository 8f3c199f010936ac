//! Notification preferences (one JSON document per user) and notifications.
//! A notification is stored before it is sent; the delivery loop and the
//! request that created it both deliver under `FOR UPDATE SKIP LOCKED`, so no
//! notification is sent twice, even by several ingest instances, and one
//! held through quiet hours survives a restart.

use std::future::Future;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::{Repository, RepositoryError};
use crate::schema::{notification_preferences, notifications};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = notifications)]
pub struct NotificationRow {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub message: String,
    pub severity: String,
    pub data: serde_json::Value,
    pub held: bool,
    pub live: bool,
    pub created_at: DateTime<Utc>,
    pub deliver_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Which undelivered notifications to deliver.
pub enum Due<'a> {
    /// Every one due at `now` (the delivery loop).
    At(DateTime<Utc>),
    /// These, just created and due at once (the request that made them).
    Ids(&'a [String]),
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error("publishing a notification failed")]
    Publish(#[source] E),
}

impl<E: std::error::Error + 'static> From<diesel::result::Error> for DeliverError<E> {
    fn from(e: diesel::result::Error) -> Self {
        Self::Repository(RepositoryError::Query(e))
    }
}

/// Publishes rows claimed with `FOR UPDATE SKIP LOCKED`, in order, and
/// answers the ids published. A failure on the first row is an error
/// (nothing was done); a later one stops the round, and the rows left stay
/// claimable for the next.
pub(super) async fn publish_claimed<R, E, F, Fut>(
    rows: Vec<R>,
    id: impl Fn(&R) -> String,
    publish: &F,
    what: &str,
) -> Result<Vec<String>, DeliverError<E>>
where
    E: std::error::Error + 'static,
    F: Fn(R) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut done = Vec::with_capacity(rows.len());
    for row in rows {
        let row_id = id(&row);
        match publish(row).await {
            Ok(()) => done.push(row_id),
            Err(e) if done.is_empty() => return Err(DeliverError::Publish(e)),
            Err(e) => {
                tracing::warn!(error = %e, "{what} publish failed; retried later");
                break;
            }
        }
    }
    Ok(done)
}

impl Repository {
    pub async fn preferences(
        &self,
        tenant: &str,
        user: &str,
    ) -> Result<Option<serde_json::Value>, RepositoryError> {
        let mut conn = self.pool.get().await?;
        Ok(notification_preferences::table
            .find((tenant, user))
            .select(notification_preferences::preferences)
            .first(&mut conn)
            .await
            .optional()?)
    }

    /// The stored preferences of those of `users` who have any.
    pub async fn preferences_of(
        &self,
        tenant: &str,
        users: &[&str],
    ) -> Result<Vec<(String, serde_json::Value)>, RepositoryError> {
        let mut conn = self.pool.get().await?;
        Ok(notification_preferences::table
            .filter(notification_preferences::tenant_id.eq(tenant))
            .filter(notification_preferences::user_id.eq_any(users))
            .select((
                notification_preferences::user_id,
                notification_preferences::preferences,
            ))
            .load(&mut conn)
            .await?)
    }

    pub async fn put_preferences(
        &self,
        tenant: &str,
        user: &str,
        prefs: &serde_json::Value,
    ) -> Result<(), RepositoryError> {
        let mut conn = self.pool.get().await?;
        diesel::insert_into(notification_preferences::table)
            .values((
                notification_preferences::tenant_id.eq(tenant),
                notification_preferences::user_id.eq(user),
                notification_preferences::preferences.eq(prefs),
            ))
            .on_conflict((
                notification_preferences::tenant_id,
                notification_preferences::user_id,
            ))
            .do_update()
            .set((
                notification_preferences::preferences.eq(prefs),
                notification_preferences::updated_at.eq(diesel::dsl::now),
            ))
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    pub async fn insert_notification(&self, row: &NotificationRow) -> Result<(), RepositoryError> {
        let mut conn = self.pool.get().await?;
        diesel::insert_into(notifications::table)
            .values(row)
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    /// Locks up to `limit` undelivered notifications (skipping those another
    /// transaction holds), hands each to `publish`, and marks those it took
    /// as delivered at `now`. A failed publish leaves it and the rest for the
    /// next round. Answers how many were delivered.
    pub async fn deliver<E, F, Fut>(
        &self,
        due: Due<'_>,
        now: DateTime<Utc>,
        limit: i64,
        publish: F,
    ) -> Result<usize, DeliverError<E>>
    where
        E: std::error::Error + Send + 'static,
        F: Fn(NotificationRow) -> Fut + Send + Sync,
        Fut: Future<Output = Result<(), E>> + Send,
    {
        use crate::schema::notifications::dsl as n;
        let mut conn = self.pool.get().await.map_err(RepositoryError::from)?;
        conn.transaction::<_, DeliverError<E>, _>(async |conn| {
            // Locking clauses cannot be boxed, hence one query per case.
            let base = n::notifications
                .filter(n::delivered_at.is_null())
                .select(NotificationRow::as_select())
                .order((n::deliver_at.asc(), n::id.asc()))
                .limit(limit);
            let rows: Vec<NotificationRow> = match due {
                Due::At(at) => {
                    base.filter(n::deliver_at.le(at))
                        .for_update()
                        .skip_locked()
                        .load(conn)
                        .await?
                }
                Due::Ids(ids) => {
                    base.filter(n::id.eq_any(ids))
                        .for_update()
                        .skip_locked()
                        .load(conn)
                        .await?
                }
            };
            let done = publish_claimed(rows, |r| r.id.clone(), &publish, "notification").await?;
            diesel::update(n::notifications.filter(n::id.eq_any(&done)))
                .set(n::delivered_at.eq(now))
                .execute(conn)
                .await?;
            Ok(done.len())
        })
        .await
    }
}
