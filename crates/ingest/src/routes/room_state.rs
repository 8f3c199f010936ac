//! `PUT /v1/tenants/{t}/rooms/{room}/state`: a room's latest state. The
//! `state.updated` event that announces it is stored first; its `seq` goes
//! with the state into KV `SB_ROOM_STATE`, where gateways read it on `join`.
//! Of two concurrent writes, the KV keeps the one with the higher `seq`.

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use switchboard_platform::Problem;
use switchboard_platform::nats::publish_room_event;
use switchboard_proto::room_state::RoomState;
use switchboard_proto::{RoomName, pb, subjects};

use super::auth::require_tenant_key;
use super::{AppState, Endpoint, parse_json, publish_problem};
use crate::domain::fields::Fields;
use crate::domain::secrets;

pub fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint::new(
        Method::PUT,
        "/v1/tenants/{tenant}/rooms/{room}/state",
        |r| r.to(put_state),
    )]
}

/// Compare-and-set attempts before giving up on a hot key.
const CAS_ATTEMPTS: usize = 10;

async fn put_state(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let (tenant, room) = path.into_inner();
    let tenant = require_tenant_key(&req, &state, &tenant).await?;
    let room = RoomName::parse(room)
        .map_err(|e| Problem::invalid("room", format!("must match {}", e.rule)))?;
    let input: Value = parse_json(&body)?;
    let f = Fields::object(&input, "", "", &["data"])?;
    let data = input.get("data").cloned().unwrap_or(Value::Null);
    if input.get("data").is_none() {
        return Err(f.invalid("data", "is required (any JSON value, null included)"));
    }
    let bytes = serde_json::to_vec(&data).expect("a JSON value always serializes");
    let max = state.settings.max_event_bytes;
    if bytes.len() > max {
        return Err(f.invalid(
            "data",
            format!("must be at most {max} bytes of JSON (was {})", bytes.len()),
        ));
    }

    let now_ms = chrono::Utc::now().timestamp_millis();
    let event = pb::RoomEvent {
        id: secrets::new_event_id(),
        tenant: tenant.as_str().to_owned(),
        room: room.as_str().to_owned(),
        event: "state.updated".to_owned(),
        data: bytes,
        source: "api".to_owned(),
        ts_unix_ms: now_ms,
        ..Default::default()
    };
    let ack = publish_room_event(&state.bus.jetstream, &tenant, &room, &event)
        .await
        .map_err(publish_problem)?;
    let value = RoomState {
        seq: ack.sequence,
        data,
        updated_at_ms: now_ms,
    };
    let value: bytes::Bytes = serde_json::to_vec(&value)
        .expect("room state serializes")
        .into();
    let key = subjects::room_state_key(&tenant, &room);
    write_newest(&state, &key, ack.sequence, value).await?;
    Ok(HttpResponse::Ok().json(json!({"room": room, "seq": ack.sequence})))
}

fn kv_problem(e: &dyn std::error::Error) -> Problem {
    tracing::warn!(error = %e, "writing KV SB_ROOM_STATE failed");
    Problem::unavailable(
        "the room state store (NATS KV) did not take the state; the state.updated event was stored, retry",
    )
}

/// Writes `value` unless the key already holds a newer state.
async fn write_newest(
    state: &AppState,
    key: &str,
    seq: u64,
    value: bytes::Bytes,
) -> Result<(), Problem> {
    let kv = &state.bus.room_state;
    for _ in 0..CAS_ATTEMPTS {
        let current = kv.entry(key).await.map_err(|e| kv_problem(&e))?;
        let written = match current {
            Some(entry) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
                let newer =
                    serde_json::from_slice::<RoomState>(&entry.value).is_ok_and(|s| s.seq > seq);
                if newer {
                    return Ok(());
                }
                kv.update(key, value.clone(), entry.revision).await.is_ok()
            }
            Some(entry) => kv.update(key, value.clone(), entry.revision).await.is_ok(),
            None => kv.create(key, value.clone()).await.is_ok(),
        };
        if written {
            return Ok(());
        }
    }
    Err(Problem::unavailable(
        "the room's state is being written concurrently; retry",
    ))
}
