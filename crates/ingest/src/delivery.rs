//! The delivery loop: notifications held through quiet hours (and any whose
//! first delivery failed) are sent once they are due by ingest's clock, and
//! suggestion announcements the request could not publish are published from
//! the outbox. Rows are claimed with `FOR UPDATE SKIP LOCKED`, so several
//! instances share the work without sending one twice, and rows left by a
//! stopped process are picked up by the next.

use std::time::Duration;

use switchboard_platform::Shutdown;
use switchboard_proto::TenantId;

use crate::outbound::{announce_suggestions, publish_notification};
use crate::repository::notifications::{DeliverError, Due};
use crate::state::AppState;

/// Notifications, or announcements, claimed per transaction.
const DELIVERY_BATCH: i64 = 100;
/// An announcement the request that stored it has not published after this
/// long is the loop's to publish. Should both publish it (a request slower
/// than this), the event ids are the same and JetStream stores it once.
const ANNOUNCE_GRACE: chrono::Duration = chrono::Duration::seconds(2);

/// Delivers due notifications until `shutdown`: at start, every `poll`, and
/// whenever a test's manual clock moves.
pub async fn run(state: AppState, poll: Duration, mut shutdown: Shutdown) {
    let mut clock_moves = state.clock.changes();
    loop {
        deliver_due(&state).await;
        publish_stale_announcements(&state).await;
        if let Ok((announcements, notifications)) = state.repo.backlog().await {
            state.metrics.outbox_backlog.set(announcements);
            state.metrics.undelivered_notifications.set(notifications);
        }
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(poll) => {}
            _ = clock_moves.changed() => {}
        }
    }
    tracing::debug!("notification delivery stopped");
}

async fn deliver_due(state: &AppState) {
    loop {
        let now = state.clock.now();
        let result = state
            .repo
            .deliver(Due::At(now), now, DELIVERY_BATCH, |row| async move {
                publish_notification(state, &row).await
            })
            .await;
        match result {
            Ok(n) if n as i64 == DELIVERY_BATCH => continue,
            Ok(0) => break,
            Ok(n) => {
                tracing::info!(count = n, "held notifications delivered");
                break;
            }
            Err(DeliverError::Publish(e)) => {
                tracing::warn!(error = %e, "delivering notifications failed; retrying next round");
                break;
            }
            Err(DeliverError::Repository(e)) => {
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "reading due notifications failed");
                break;
            }
        }
    }
}

async fn publish_stale_announcements(state: &AppState) {
    loop {
        // Real time: this is about how long a request takes, not the clock
        // that quiet hours follow.
        let stored_before = chrono::Utc::now() - ANNOUNCE_GRACE;
        let result = state
            .repo
            .publish_stale_announcements(stored_before, DELIVERY_BATCH, |row| async move {
                let Ok(tenant) = TenantId::parse(row.tenant_id.clone()) else {
                    tracing::warn!(tenant = %row.tenant_id, "announcement of an invalid tenant id skipped");
                    return Ok(());
                };
                announce_suggestions(state, &tenant, &row.event, &[(row.key, row.data)]).await
            })
            .await;
        match result {
            Ok(n) if n as i64 == DELIVERY_BATCH => continue,
            Ok(0) => break,
            Ok(n) => {
                tracing::info!(count = n, "outbox announcements published");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "publishing the outbox failed; retrying next round");
                break;
            }
        }
    }
}

/// Delivers notifications just created and due at once, and says how many
/// it delivered. One the loop holds at this moment is delivered by the loop
/// instead; one whose publish fails stays due, and the loop retries it.
pub async fn deliver_now(state: &AppState, ids: &[String]) -> usize {
    if ids.is_empty() {
        return 0;
    }
    let now = state.clock.now();
    let result = state
        .repo
        .deliver(Due::Ids(ids), now, ids.len() as i64, |row| async move {
            publish_notification(state, &row).await
        })
        .await;
    match result {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "immediate notification delivery failed; the delivery loop retries");
            0
        }
    }
}
