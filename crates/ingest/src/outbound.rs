//! What ingest tells rooms and other services about suggestions and
//! notifications. Every event id is derived from what it announces, so a
//! retried announcement (an idempotent replay, a delivery retried after a
//! crash) is stored once by JetStream's deduplication.

use serde_json::{Value, json};
use switchboard_platform::nats::{
    PublishEventError, publish_room_event, send_domain_event, send_room_event,
};
use switchboard_proto::{EventName, RoomName, TenantId, pb};

use crate::domain::secrets::idempotent_event_id;
use crate::metrics::PublishKind;
use crate::repository::announcements::AnnouncementRow;
use crate::repository::notifications::NotificationRow;
use crate::repository::suggestions::SuggestionRow;
use crate::state::AppState;

pub const SUGGESTIONS_ROOM: &str = "suggestions";
pub const SOURCE: &str = "ingest";

/// A stored float as JSON: a whole number is written as an integer (`1200`,
/// not `1200.0`), as most clients post it; JSON does not tell them apart, but
/// typed clients that compare with an integer do.
fn number(f: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if f.fract() == 0.0 && f.abs() < EXACT {
        json!(f as i64)
    } else {
        json!(f)
    }
}

pub fn suggestion_json(row: &SuggestionRow) -> Value {
    json!({
        "id": row.id,
        "batch_id": row.batch_id,
        "agent_type": row.agent_type,
        "title": row.title,
        "description": row.description,
        "estimated_revenue": number(row.estimated_revenue),
        "confidence_score": number(row.confidence_score),
        "priority": row.priority,
        "user_id": row.user_id,
        "status": row.status,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

/// A room named from stored data (checked when it entered, so a failure here
/// means a row was changed by hand): skipped with a warning rather than
/// stopping the loop that publishes it.
fn room(name: &str) -> Option<RoomName> {
    let room = RoomName::parse(name).ok();
    if room.is_none() {
        tracing::warn!(room = %name, "not announcing to an invalid room name");
    }
    room
}

/// Publishes `event` (`suggestion.created` or `suggestion.updated`) for each
/// suggestion to room `suggestions`, to `user:{user_id}` when it has one, and
/// as a domain event. `key` makes the event ids: the suggestion id for a
/// creation, the response id for an update. Waits for every ack.
pub async fn announce_suggestions(
    state: &AppState,
    tenant: &TenantId,
    event: &str,
    items: &[(String, Value)],
) -> Result<(), PublishEventError> {
    let Ok(name) = EventName::parse(event) else {
        tracing::warn!(event = %event, "not announcing an invalid event name");
        return Ok(());
    };
    // When JetStream accepted it: real time, whatever clock the domain reads.
    let ts = chrono::Utc::now().timestamp_millis();
    let timed = state.metrics.publish(PublishKind::Announcement);
    let published = async {
        let mut acks = Vec::with_capacity(items.len() * 3);
        for (key, suggestion) in items {
            let data = serde_json::to_vec(suggestion).expect("a JSON value always serializes");
            let mut rooms: Vec<RoomName> = room(SUGGESTIONS_ROOM).into_iter().collect();
            if let Some(user) = suggestion["user_id"].as_str() {
                rooms.extend(room(&format!("user:{user}")));
            }
            for room in rooms {
                let scope = format!("{event}:{room}");
                let ev = pb::RoomEvent {
                    id: idempotent_event_id(tenant.as_str(), &scope, key, 0),
                    tenant: tenant.as_str().to_owned(),
                    room: room.as_str().to_owned(),
                    event: event.to_owned(),
                    data: data.clone(),
                    source: SOURCE.to_owned(),
                    ts_unix_ms: ts,
                    ..Default::default()
                };
                acks.push(send_room_event(&state.bus.jetstream, tenant, &room, &ev).await?);
            }
            let dom = pb::DomainEvent {
                id: idempotent_event_id(tenant.as_str(), &format!("dom:{event}"), key, 0),
                tenant: tenant.as_str().to_owned(),
                name: event.to_owned(),
                data,
                source: SOURCE.to_owned(),
                ts_unix_ms: ts,
            };
            acks.push(send_domain_event(&state.bus.jetstream, tenant, &name, &dom).await?);
        }
        for ack in acks {
            ack.await?;
        }
        Ok::<_, PublishEventError>(())
    }
    .await;
    timed.done(published)
}

/// Publishes outbox entries just committed, then marks them published. On a
/// failure they stay in the outbox and the background loop publishes them
/// (the change itself is stored, so the request still succeeds).
pub async fn publish_announcements(state: &AppState, tenant: &TenantId, rows: &[AnnouncementRow]) {
    // Consecutive entries of one event go out together, pipelined.
    let mut start = 0;
    while start < rows.len() {
        let event = rows[start].event.as_str();
        let end = rows[start..]
            .iter()
            .position(|r| r.event != event)
            .map_or(rows.len(), |n| start + n);
        let chunk = &rows[start..end];
        let items: Vec<(String, Value)> = chunk
            .iter()
            .map(|r| (r.key.clone(), r.data.clone()))
            .collect();
        if let Err(e) = announce_suggestions(state, tenant, event, &items).await {
            tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "announcing failed; the outbox loop retries");
            return;
        }
        let ids: Vec<String> = chunk.iter().map(|r| r.id.clone()).collect();
        if let Err(e) = state.repo.mark_announced(&ids).await {
            // Published but not marked: the loop publishes again, and
            // JetStream's deduplication stores it once.
            tracing::warn!(error = %e, "marking announcements published failed");
        }
        start = end;
    }
}

/// The live `notification` event in room `user:{user}`.
pub async fn publish_notification(
    state: &AppState,
    row: &NotificationRow,
) -> Result<(), PublishEventError> {
    if !row.live {
        return Ok(());
    }
    let Ok(tenant) = TenantId::parse(row.tenant_id.clone()) else {
        tracing::warn!(tenant = %row.tenant_id, "notification of an invalid tenant id skipped");
        return Ok(());
    };
    let Some(room) = room(&format!("user:{}", row.user_id)) else {
        return Ok(());
    };
    let data = json!({
        "id": row.id,
        "message": row.message,
        "severity": row.severity,
        "data": row.data,
        "created_at": row.created_at,
        "held": row.held,
    });
    let ev = pb::RoomEvent {
        id: idempotent_event_id(tenant.as_str(), "notification", &row.id, 0),
        tenant: tenant.as_str().to_owned(),
        room: room.as_str().to_owned(),
        event: "notification".to_owned(),
        data: serde_json::to_vec(&data).expect("a JSON value always serializes"),
        source: SOURCE.to_owned(),
        ts_unix_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    };
    let timed = state.metrics.publish(PublishKind::Notification);
    timed.done(publish_room_event(&state.bus.jetstream, &tenant, &room, &ev).await)?;
    Ok(())
}
