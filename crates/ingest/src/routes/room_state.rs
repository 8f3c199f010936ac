//! `PUT /v1/tenants/{t}/rooms/{room}/state`: a room's latest state. The
//! `state.updated` event that announces it is stored first; its `seq` goes
//! with the state into KV `SB_ROOM_STATE`, where gateways read it on `join`.
//! Of two concurrent writes, the KV keeps the one with the higher `seq`.

use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use serde_json::{Value, json};
use switchboard_platform::nats::{PublishEventError, publish_room_event};
use switchboard_platform::{Problem, api_error};
use switchboard_proto::room_state::RoomState;
use switchboard_proto::{RoomName, pb, subjects};
use tracing::Instrument as _;

use super::auth::TenantKey;
use super::{ApiError, Endpoint, Invalid, NotJson, json_body};
use crate::domain::fields::Fields;
use crate::domain::secrets;
use crate::metrics::PublishKind;
use crate::state::AppState;

pub fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint::new(
        Method::PUT,
        "/v1/tenants/{tenant}/rooms/{room}/state",
        |r| r.to(put_state),
    )]
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    NotJson(#[from] NotJson),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("JetStream did not store the state.updated event")]
    Publish(#[source] PublishEventError),
    #[error("the state store (KV SB_ROOM_STATE) failed after seq {seq} was stored")]
    Store {
        seq: u64,
        #[source]
        source: async_nats::Error,
    },
    #[error("the room's state is being written concurrently after seq {seq} was stored")]
    Contended { seq: u64 },
}

impl ApiError for StateError {
    fn problem(&self) -> Option<Problem> {
        Some(match self {
            Self::NotJson(e) => e.into(),
            Self::Invalid(e) => e.into(),
            Self::Publish(_) => Problem::unavailable(
                "the event store did not acknowledge; the state was not changed, retry",
            ),
            Self::Store { seq, .. } | Self::Contended { seq } => Problem::unavailable(format!(
                "the state.updated event was stored (seq {seq}) but the room state store (NATS KV) did not take the state; retry the PUT"
            )),
        })
    }
}

api_error!(StateError);

/// Compare-and-set attempts before giving up on a hot key.
const CAS_ATTEMPTS: usize = 10;

async fn put_state(
    tenant: TenantKey,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, StateError> {
    let (_, room) = path.into_inner();
    let room = RoomName::parse(room)
        .map_err(|e| Invalid::new("room", format!("must match {}", e.rule)))?;
    let input = json_body(&body)?;
    let f = Fields::object(&input, "", "", &["data"])?;
    let data = input.get("data").cloned().unwrap_or(Value::Null);
    if input.get("data").is_none() {
        return Err(f
            .invalid("data", "is required (any JSON value, null included)")
            .into());
    }
    let bytes = serde_json::to_vec(&data).expect("a JSON value always serializes");
    let max = state.settings.max_event_bytes;
    if bytes.len() > max {
        return Err(f
            .invalid(
                "data",
                format!("must be at most {max} bytes of JSON (was {})", bytes.len()),
            )
            .into());
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
    let timed = state.metrics.publish(PublishKind::State);
    let ack = publish_room_event(&state.bus.jetstream, &tenant, &room, &event)
        .instrument(publish_span())
        .await;
    let ack = timed.done(ack).map_err(StateError::Publish)?;
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

/// The span of the publish when traces are exported.
fn publish_span() -> tracing::Span {
    if switchboard_platform::telemetry::exporting() {
        tracing::info_span!(
            "jetstream.publish",
            otel.kind = "producer",
            messaging.system = "nats"
        )
    } else {
        tracing::Span::none()
    }
}

/// Writes `value` unless the key already holds a newer state.
async fn write_newest(
    state: &AppState,
    key: &str,
    seq: u64,
    value: bytes::Bytes,
) -> Result<(), StateError> {
    let kv = &state.bus.room_state;
    for _ in 0..CAS_ATTEMPTS {
        let current = kv.entry(key).await.map_err(|e| StateError::Store {
            seq,
            source: Box::new(e),
        })?;
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
    Err(StateError::Contended { seq })
}
