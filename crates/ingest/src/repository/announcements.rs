//! The outbox of suggestion announcements. A change to a suggestion and its
//! announcement commit together; the announcement is marked published once
//! JetStream acked it, and the background loop publishes those left behind,
//! claiming them with `FOR UPDATE SKIP LOCKED` so instances share the work.

use std::future::Future;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::notifications::{DeliverError, publish_claimed};
use super::{Repository, RepositoryError};
use crate::schema::announcements;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = announcements)]
pub struct AnnouncementRow {
    pub id: String,
    pub tenant_id: String,
    pub event: String,
    pub key: String,
    pub data: serde_json::Value,
}

impl Repository {
    pub async fn mark_announced(&self, ids: &[String]) -> Result<(), RepositoryError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.get().await?;
        diesel::update(announcements::table.filter(announcements::id.eq_any(ids)))
            .set(announcements::published_at.eq(diesel::dsl::now))
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    /// Publishes up to `limit` announcements stored before `stored_before`
    /// and still unpublished (the request that stored them had its chance),
    /// oldest first. Answers how many were published.
    pub async fn publish_stale_announcements<E, F, Fut>(
        &self,
        stored_before: DateTime<Utc>,
        limit: i64,
        publish: F,
    ) -> Result<usize, DeliverError<E>>
    where
        E: std::error::Error + Send + 'static,
        F: Fn(AnnouncementRow) -> Fut + Send + Sync,
        Fut: Future<Output = Result<(), E>> + Send,
    {
        use crate::schema::announcements::dsl as a;
        let mut conn = self.pool.get().await.map_err(RepositoryError::from)?;
        conn.transaction::<_, DeliverError<E>, _>(async |conn| {
            let rows: Vec<AnnouncementRow> = a::announcements
                .filter(a::published_at.is_null())
                .filter(a::created_at.lt(stored_before))
                .select(AnnouncementRow::as_select())
                .order((a::created_at.asc(), a::id.asc()))
                .limit(limit)
                .for_update()
                .skip_locked()
                .load(conn)
                .await?;
            let done = publish_claimed(rows, |r| r.id.clone(), &publish, "announcement").await?;
            diesel::update(a::announcements.filter(a::id.eq_any(&done)))
                .set(a::published_at.eq(diesel::dsl::now))
                .execute(conn)
                .await?;
            Ok(done.len())
        })
        .await
    }
}

impl Repository {
    /// How many announcements wait to be published, and how many
    /// notifications to be delivered (both from partial indexes).
    pub async fn backlog(&self) -> Result<(i64, i64), RepositoryError> {
        use crate::schema::{announcements as a, notifications as n};
        let mut conn = self.pool.get().await?;
        let announcements = a::table
            .filter(a::published_at.is_null())
            .count()
            .get_result(&mut conn)
            .await?;
        let notifications = n::table
            .filter(n::delivered_at.is_null())
            .count()
            .get_result(&mut conn)
            .await?;
        Ok((announcements, notifications))
    }
}
