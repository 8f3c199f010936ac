//! Room events from backends: `POST /v1/tenants/{t}/rooms/{r}/events` and the
//! batch `POST /v1/tenants/{t}/events`. Both answer only after JetStream has
//! acked every event; with an `Idempotency-Key` a retry gets the first answer
//! again and nothing new is stored.

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use prost::Message as _;
use serde_json::json;
use switchboard_platform::Problem;
use switchboard_platform::nats::{send_room_event_timed, trace_headers};
use switchboard_proto::{TenantId, subjects};

use super::auth::require_tenant_key;
use super::{AppState, Endpoint, WorkerJetStream, parse_json, publish_problem, repository_problem};
use crate::domain::event::{NewBatch, NewEvent, ValidEvent};
use crate::domain::secrets;

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(
            Method::POST,
            "/v1/tenants/{tenant}/rooms/{room}/events",
            |r| r.to(publish_one),
        ),
        Endpoint::new(Method::POST, "/v1/tenants/{tenant}/events", |r| {
            r.to(publish_batch)
        }),
    ]
}

const IDEMPOTENCY_KEY_RULE: &str = "1 to 255 visible ASCII characters";

pub fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, Problem> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_owned()))
        }
        _ => Err(Problem::invalid("Idempotency-Key", IDEMPOTENCY_KEY_RULE)),
    }
}

/// The answer for one stored event, in the single answer and in a batch's
/// `items`.
#[derive(serde::Serialize)]
struct Stored {
    id: String,
    seq: u64,
}

#[derive(serde::Serialize)]
struct StoredBatch {
    items: Vec<Stored>,
}

/// Sends `answer` as `201`; with an idempotency key, records it first so a
/// retry gets it again.
async fn answer_stored(
    state: &AppState,
    tenant: &TenantId,
    scope: &str,
    key: Option<&str>,
    body: &[u8],
    answer: &impl serde::Serialize,
) -> Result<HttpResponse, Problem> {
    if let Some(key) = key {
        let value = serde_json::to_value(answer).expect("an answer always serializes");
        state
            .repo
            .remember_response(
                tenant.as_str(),
                scope,
                key,
                &secrets::request_hash(body),
                &value,
            )
            .await
            .map_err(|e| repository_problem("storing an idempotency record", e))?;
    }
    Ok(HttpResponse::Created().json(answer))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Where a request with a key stands: answered before, or new.
enum Replay {
    Answered(serde_json::Value),
    New,
}

async fn replay(
    state: &AppState,
    tenant: &TenantId,
    scope: &str,
    key: Option<&str>,
    body: &[u8],
) -> Result<Replay, Problem> {
    let Some(key) = key else {
        return Ok(Replay::New);
    };
    let stored = state
        .repo
        .idempotent_response(tenant.as_str(), scope, key)
        .await
        .map_err(|e| repository_problem("reading an idempotency record", e))?;
    match stored {
        None => Ok(Replay::New),
        Some(s) if s.request_hash == secrets::request_hash(body) => {
            Ok(Replay::Answered(s.response))
        }
        Some(_) => Err(Problem::invalid(
            "Idempotency-Key",
            "was already used for a different request body; use a new key for a new request",
        )),
    }
}

async fn publish_one(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
    js: web::Data<WorkerJetStream>,
) -> Result<HttpResponse, Problem> {
    let http_in = crate::hops::now_ns();
    let (tenant, room) = path.into_inner();
    let tenant = require_tenant_key(&req, &state, &tenant).await?;
    let key = idempotency_key(&req)?;
    let input: NewEvent = parse_json(&body)?;
    let valid = ValidEvent::parse(
        None,
        &room,
        &input.event,
        &input.data,
        input.source.as_deref(),
        state.settings.max_event_bytes,
    )?;

    if input.ephemeral {
        let id = secrets::new_event_id();
        let (room, event) = valid.into_proto(id.clone(), tenant.as_str(), now_ms(), true);
        state
            .bus
            .client
            .publish_with_headers(
                subjects::room_ephemeral(&tenant, &room),
                trace_headers(),
                event.encode_to_vec().into(),
            )
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "ephemeral publish failed");
                Problem::unavailable("NATS is unreachable; the ephemeral event was not sent")
            })?;
        return Ok(HttpResponse::Accepted().json(json!({"id": id, "ephemeral": true})));
    }

    let scope = format!("room:{}", valid.room);
    if let Replay::Answered(body) = replay(&state, &tenant, &scope, key.as_deref(), &body).await? {
        return Ok(HttpResponse::Created().json(body));
    }
    let id = match key.as_deref() {
        Some(k) => secrets::idempotent_event_id(tenant.as_str(), &scope, k, 0),
        None => secrets::new_event_id(),
    };
    let (room, event) = valid.into_proto(id.clone(), tenant.as_str(), now_ms(), false);
    let ack = send_room_event_timed(&js.0, &tenant, &room, &event, state.hops.mark(http_in))
        .await
        .map_err(publish_problem)?
        .await
        .map_err(|e| publish_problem(e.into()))?;
    let answer = Stored {
        id,
        seq: ack.sequence,
    };
    answer_stored(&state, &tenant, &scope, key.as_deref(), &body, &answer).await
}

async fn publish_batch(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
    js: web::Data<WorkerJetStream>,
) -> Result<HttpResponse, Problem> {
    let http_in = crate::hops::now_ns();
    let tenant = require_tenant_key(&req, &state, &path.into_inner()).await?;
    let key = idempotency_key(&req)?;
    let input: NewBatch = parse_json(&body)?;
    let max = state.settings.max_batch_events;
    if input.events.is_empty() || input.events.len() > max {
        return Err(Problem::invalid(
            "events",
            format!("must hold 1 to {max} events"),
        ));
    }
    // Validate everything before publishing anything.
    let valid = input
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            ValidEvent::parse(
                Some(i),
                &e.room,
                &e.event,
                &e.data,
                e.source.as_deref(),
                state.settings.max_event_bytes,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;

    let scope = "batch";
    if let Replay::Answered(body) = replay(&state, &tenant, scope, key.as_deref(), &body).await? {
        return Ok(HttpResponse::Created().json(body));
    }
    let ts = now_ms();
    // Send all, then collect the acks: the publishes are pipelined, and the
    // answer is given only when every one is stored.
    let mut pending = Vec::with_capacity(valid.len());
    for (i, v) in valid.into_iter().enumerate() {
        let id = match key.as_deref() {
            Some(k) => secrets::idempotent_event_id(tenant.as_str(), scope, k, i),
            None => secrets::new_event_id(),
        };
        let (room, event) = v.into_proto(id.clone(), tenant.as_str(), ts, false);
        let ack = send_room_event_timed(&js.0, &tenant, &room, &event, state.hops.mark(http_in))
            .await
            .map_err(publish_problem)?;
        pending.push((id, ack));
    }
    let mut items = Vec::with_capacity(pending.len());
    for (id, ack) in pending {
        let ack = ack.await.map_err(|e| publish_problem(e.into()))?;
        items.push(Stored {
            id,
            seq: ack.sequence,
        });
    }
    let answer = StoredBatch { items };
    answer_stored(&state, &tenant, scope, key.as_deref(), &body, &answer).await
}
