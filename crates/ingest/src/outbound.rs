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
use crate::repository::notifications::NotificationRow;
use crate::repository::suggestions::SuggestionRow;
use crate::routes::AppState;

pub const SUGGESTIONS_ROOM: &str = "suggestions";
pub const SOURCE: &str = "ingest";

pub fn suggestion_json(row: &SuggestionRow) -> Value {
    json!({
        "id": row.id,
        "batch_id": row.batch_id,
        "agent_type": row.agent_type,
        "title": row.title,
        "description": row.description,
        "estimated_revenue": row.estimated_revenue,
        "confidence_score": row.confidence_score,
        "priority": row.priority,
        "user_id": row.user_id,
        "status": row.status,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("room names built here follow the rule")
}

/// Publishes `event` (`suggestion.created` or `suggestion.updated`) for each
/// suggestion to room `suggestions`, to `user:{user_id}` when it has one, and
/// as a domain event. `key` makes the event ids: the suggestion id for a
/// creation, the response id for an update. Waits for every ack.
pub async fn announce_suggestions(
    state: &AppState,
    tenant: &TenantId,
    event: &'static str,
    items: &[(String, Value)],
) -> Result<(), PublishEventError> {
    let name = EventName::parse(event).expect("suggestion event names follow the rule");
    let ts = state.clock.now().timestamp_millis();
    let mut acks = Vec::with_capacity(items.len() * 3);
    for (key, suggestion) in items {
        let data = serde_json::to_vec(suggestion).expect("a JSON value always serializes");
        let mut rooms = vec![room(SUGGESTIONS_ROOM)];
        if let Some(user) = suggestion["user_id"].as_str() {
            rooms.push(room(&format!("user:{user}")));
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
    Ok(())
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
    let room = room(&format!("user:{}", row.user_id));
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
    publish_room_event(&state.bus.jetstream, &tenant, &room, &ev).await?;
    Ok(())
}
