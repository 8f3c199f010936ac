//! Room events from backends: `POST /v1/tenants/{t}/rooms/{r}/events` and the
//! batch `POST /v1/tenants/{t}/events`. Both answer only after JetStream has
//! stored every event; a batch is stored all or none (one atomic JetStream
//! batch). With an `Idempotency-Key` a retry gets the first answer again and
//! nothing is stored twice — even when the first attempt's answer was lost
//! ([`crate::repository::idempotency`]).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use prost::Message as _;
use serde_json::{Value, json};
use switchboard_platform::Problem;
use switchboard_platform::api_error;
use switchboard_platform::nats::{
    self as nats, BatchPublishError, Outgoing, PublishEventError, ReadError, send_room_event_timed,
    trace_headers,
};
use switchboard_proto::{TenantId, subjects};
use tracing::Instrument as _;

use super::auth::TenantKey;
use super::{ApiError, Endpoint, Invalid, NotJson, json_body, repository_problem};
use crate::domain::event::{ValidEvent, parse_batch, parse_single};
use crate::domain::secrets;
use crate::metrics::PublishKind;
use crate::records::Answer;
use crate::repository::RepositoryError;
use crate::repository::idempotency::Claim;
use crate::state::{AppState, WorkerJetStream};

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

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    NotJson(#[from] NotJson),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the Idempotency-Key was already used for a different request body")]
    KeyReused,
    #[error(
        "an earlier request with this Idempotency-Key may have stored its events, and the stream no longer holds enough to tell"
    )]
    Undecidable,
    #[error("the idempotency record could not be read or claimed")]
    Record(#[source] RepositoryError),
    #[error("JetStream did not store the event")]
    Store(#[source] PublishEventError),
    #[error("JetStream did not store the batch")]
    StoreBatch(#[source] BatchPublishError),
    #[error("NATS did not take the ephemeral event")]
    Ephemeral(#[source] async_nats::PublishError),
    #[error("looking for an earlier attempt's events in JetStream failed")]
    Lookup(#[source] ReadError),
}

impl ApiError for PublishError {
    fn problem(&self) -> Option<Problem> {
        Some(match self {
            Self::NotJson(e) => e.into(),
            Self::Invalid(e) => e.into(),
            Self::KeyReused => Problem::invalid("Idempotency-Key", KEY_REUSED_RULE),
            Self::Undecidable => Problem::conflict(format!(
                "{self}: nothing was stored again; send the events under a new key if they are still wanted"
            ))
            .with_field("Idempotency-Key"),
            Self::Record(e) => return repository_problem(e),
            Self::Store(_) | Self::StoreBatch(_) => Problem::unavailable(
                "the event store did not acknowledge; nothing is guaranteed stored, retry with the same Idempotency-Key",
            ),
            Self::Ephemeral(_) => {
                Problem::unavailable("NATS is unreachable; the ephemeral event was not sent")
            }
            Self::Lookup(_) => Problem::unavailable(
                "could not read the event store to settle an earlier attempt with this key; nothing was stored, retry",
            ),
        })
    }
}

api_error!(PublishError);

const IDEMPOTENCY_KEY_RULE: &str = "1 to 255 visible ASCII characters";
const KEY_REUSED_RULE: &str =
    "was already used for a different request body; use a new key for a new request";
/// An earlier attempt claimed less than this before the end of JetStream's
/// dedup window: its ids are published again and deduplicated. Older, the
/// stream is searched for them instead.
const DEDUP_MARGIN: Duration = Duration::from_secs(10);
/// Clocks of ingest instances and NATS may differ by this much.
const CLOCK_SKEW: Duration = Duration::from_secs(5);
/// How long a batch waits for room among the server's open batches.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(2);

pub fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, Invalid> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_owned()))
        }
        _ => Err(Invalid::new("Idempotency-Key", IDEMPOTENCY_KEY_RULE)),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn publish_one(
    req: HttpRequest,
    tenant: TenantKey,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<AppState>,
    js: web::Data<WorkerJetStream>,
) -> Result<HttpResponse, PublishError> {
    let http_in = crate::hops::now_ns();
    let (_, room) = path.into_inner();
    let key = idempotency_key(&req)?;
    let input = json_body(&body)?;
    let (valid, ephemeral) = parse_single(&room, &input, state.settings.max_event_bytes)?;
    let scope = format!("room:{}", valid.room);
    let request = Request {
        state: &state,
        js: &js,
        tenant: &tenant,
        scope: &scope,
        key: key.as_deref(),
        body: &body,
        http_in,
    };
    if ephemeral {
        let answer = request.ephemeral(valid).await?;
        return Ok(HttpResponse::Accepted().json(answer));
    }
    let answer = request.store(vec![valid], Shape::One).await?;
    Ok(HttpResponse::Created().json(answer))
}

async fn publish_batch(
    req: HttpRequest,
    tenant: TenantKey,
    body: web::Bytes,
    state: web::Data<AppState>,
    js: web::Data<WorkerJetStream>,
) -> Result<HttpResponse, PublishError> {
    let http_in = crate::hops::now_ns();
    let key = idempotency_key(&req)?;
    let input = json_body(&body)?;
    // Every event is checked before any is stored.
    let events = parse_batch(
        &input,
        state.settings.max_batch_events,
        state.settings.max_event_bytes,
    )?;
    let request = Request {
        state: &state,
        js: &js,
        tenant: &tenant,
        scope: "batch",
        key: key.as_deref(),
        body: &body,
        http_in,
    };
    let answer = request.store(events, Shape::Batch).await?;
    Ok(HttpResponse::Created().json(answer))
}

/// How the answer is written: `{"id", "seq"}` for one event, `{"items":
/// [{"id", "seq"}…]}` in request order for a batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    One,
    Batch,
}

fn answer(shape: Shape, ids: &[String], seqs: &[u64]) -> Value {
    let items: Vec<Value> = ids
        .iter()
        .zip(seqs)
        .map(|(id, seq)| json!({"id": id, "seq": seq}))
        .collect();
    match shape {
        Shape::One => items.into_iter().next().unwrap_or(Value::Null),
        Shape::Batch => json!({ "items": items }),
    }
}

/// Who holds a request's key, for the same body.
enum Held {
    /// This request: it publishes.
    Mine,
    /// An earlier one, which answered this.
    Answered(Value),
    /// An earlier one, claimed then, that left no answer.
    Unanswered(SystemTime),
}

/// One request's way to the stream.
struct Request<'a> {
    state: &'a AppState,
    js: &'a WorkerJetStream,
    tenant: &'a TenantId,
    scope: &'a str,
    key: Option<&'a str>,
    body: &'a [u8],
    http_in: u64,
}

impl Request<'_> {
    fn ids(&self, n: usize) -> Vec<String> {
        match self.key {
            Some(k) => (0..n)
                .map(|i| secrets::idempotent_event_id(self.tenant.as_str(), self.scope, k, i))
                .collect(),
            None => (0..n).map(|_| secrets::new_event_id()).collect(),
        }
    }

    /// Stores `events` and answers with their ids and sequences. With a
    /// key the record is claimed first and completed after the store, and
    /// a retry is answered from it, or settled against the stream.
    async fn store(&self, events: Vec<ValidEvent>, shape: Shape) -> Result<Value, PublishError> {
        let ids = self.ids(events.len());
        let Some(key) = self.key else {
            let seqs = self.publish(events, &ids, shape).await?;
            return Ok(answer(shape, &ids, &seqs));
        };
        let seqs = match self.claim(key).await? {
            Held::Answered(r) => return Ok(r),
            Held::Mine => self.publish(events, &ids, shape).await?,
            Held::Unanswered(claimed_at) => self.settle(events, &ids, shape, claimed_at).await?,
        };
        let answer = answer(shape, &ids, &seqs);
        self.complete(key, &answer).await;
        Ok(answer)
    }

    /// Claims `key` for this request, or says who holds it.
    async fn claim(&self, key: &str) -> Result<Held, PublishError> {
        let hash = secrets::request_hash(self.body);
        let claim = self
            .state
            .repo
            .claim_key(self.tenant.as_str(), self.scope, key, &hash)
            .await
            .map_err(PublishError::Record)?;
        match claim {
            Claim::New => Ok(Held::Mine),
            Claim::Earlier { request_hash, .. } if request_hash != hash => {
                Err(PublishError::KeyReused)
            }
            Claim::Earlier {
                response: Some(r), ..
            } => {
                self.state.metrics.idempotent_replays.inc();
                Ok(Held::Answered(r))
            }
            Claim::Earlier {
                response: None,
                claimed_at,
                ..
            } => Ok(Held::Unanswered(claimed_at.into())),
        }
    }

    /// Hands the answer to the key's record to the writer behind the
    /// requests ([`crate::records`]): the client need not wait for it.
    async fn complete(&self, key: &str, answer: &Value) {
        self.state
            .completer
            .complete(Answer {
                tenant: self.tenant.as_str().to_owned(),
                scope: self.scope.to_owned(),
                key: key.to_owned(),
                response: answer.clone(),
            })
            .await;
    }

    /// An earlier attempt claimed the key and wrote no answer: it may have
    /// stored the events, or not. Within JetStream's dedup window the same
    /// ids are published again (what was stored is answered with its first
    /// sequence, the rest is stored now); later, the stream is searched.
    async fn settle(
        &self,
        events: Vec<ValidEvent>,
        ids: &[String],
        shape: Shape,
        claimed_at: SystemTime,
    ) -> Result<Vec<u64>, PublishError> {
        let window = self.state.settings.streams.dedup_window;
        let age = claimed_at.elapsed().unwrap_or_default();
        if age + DEDUP_MARGIN < window {
            return self.publish(events, ids, shape).await;
        }
        let subjects: Vec<String> = events
            .iter()
            .map(|e| subjects::room_event(self.tenant, &e.room))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let wanted: HashSet<String> = ids.iter().cloned().collect();
        let found = nats::find_stored(
            &self.state.bus.jetstream,
            subjects::ROOMS_STREAM,
            subjects,
            claimed_at - CLOCK_SKEW,
            &wanted,
        )
        .await
        .map_err(PublishError::Lookup)?;
        if found.seqs.len() == ids.len() {
            return Ok(ids.iter().map(|id| found.seqs[id]).collect());
        }
        if found.seqs.is_empty() && !found.truncated {
            // Never stored: no dedup window holds these ids any more, so
            // this stores them once.
            return self.publish(events, ids, shape).await;
        }
        Err(PublishError::Undecidable)
    }

    /// Publishes events one by one, pipelined (all sent on the worker's
    /// connection, then all acks awaited): a batch when `SB_BATCH_ATOMIC`
    /// is off, and the sequences of a batch JetStream refused because its
    /// ids are stored already (each a duplicate, answered with its first
    /// sequence; nothing is stored again).
    async fn publish_each(
        &self,
        protos: &[(
            switchboard_proto::RoomName,
            switchboard_proto::pb::RoomEvent,
        )],
        kind: PublishKind,
    ) -> Result<Vec<u64>, PublishError> {
        let timed = self.state.metrics.publish(kind);
        let seqs = async {
            let mut acks = Vec::with_capacity(protos.len());
            for (room, ev) in protos {
                let mark = self.state.hops.mark(self.http_in);
                acks.push(send_room_event_timed(&self.js.0, self.tenant, room, ev, mark).await?);
            }
            let mut seqs = Vec::with_capacity(acks.len());
            for ack in acks {
                seqs.push(ack.await.map_err(PublishEventError::from)?.sequence);
            }
            Ok(seqs)
        }
        .instrument(publish_span(protos.len()))
        .await;
        timed.done(seqs).map_err(PublishError::Store)
    }

    fn protos(
        &self,
        events: Vec<ValidEvent>,
        ids: &[String],
    ) -> Vec<(
        switchboard_proto::RoomName,
        switchboard_proto::pb::RoomEvent,
    )> {
        let ts = now_ms();
        events
            .into_iter()
            .zip(ids)
            .map(|(e, id)| e.into_proto(id.clone(), self.tenant.as_str(), ts, false))
            .collect()
    }

    /// Stores the events under `ids`: one publish, or one atomic batch.
    async fn publish(
        &self,
        events: Vec<ValidEvent>,
        ids: &[String],
        shape: Shape,
    ) -> Result<Vec<u64>, PublishError> {
        let protos = self.protos(events, ids);
        if shape == Shape::Batch && !self.state.settings.batch_atomic {
            return self.publish_each(&protos, PublishKind::Batch).await;
        }
        if shape == Shape::Batch {
            // Ids of a keyed batch already stored (a retry inside the dedup
            // window whose record was lost): the batch is refused whole,
            // and its sequences are learnt event by event.
            return match self.publish_batch(&protos).await {
                Err(PublishError::StoreBatch(e)) if e.is_duplicate() => {
                    self.publish_each(&protos, PublishKind::Single).await
                }
                other => other,
            };
        }
        let (room, ev) = &protos[0];
        let span = publish_span(1);
        let timed = self.state.metrics.publish(PublishKind::Single);
        let ack = async {
            send_room_event_timed(
                &self.js.0,
                self.tenant,
                room,
                ev,
                self.state.hops.mark(self.http_in),
            )
            .await?
            .await
            .map_err(PublishEventError::from)
        }
        .instrument(span)
        .await;
        let ack = timed.done(ack).map_err(PublishError::Store)?;
        Ok(vec![ack.sequence])
    }

    async fn publish_batch(
        &self,
        protos: &[(
            switchboard_proto::RoomName,
            switchboard_proto::pb::RoomEvent,
        )],
    ) -> Result<Vec<u64>, PublishError> {
        let span = publish_span(protos.len());
        let timed = self.state.metrics.publish(PublishKind::Batch);
        let client = self.js.client();
        let started = std::time::Instant::now();
        let result = async {
            let mut wait = Duration::from_millis(5);
            loop {
                let messages = protos
                    .iter()
                    .map(|(room, ev)| {
                        let mut headers = trace_headers();
                        headers.insert(async_nats::header::NATS_MESSAGE_ID, ev.id.as_str());
                        if let Some(ns) = self.state.hops.mark(self.http_in) {
                            headers.insert(subjects::HOP_HEADER, ns.to_string().as_str());
                        }
                        Outgoing {
                            subject: subjects::room_event(self.tenant, room),
                            headers,
                            payload: ev.encode_to_vec().into(),
                        }
                    })
                    .collect();
                match nats::publish_atomic_batch(&client, messages).await {
                    Err(e) if e.is_busy() && started.elapsed() + wait < BUSY_RETRY_FOR => {
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    other => break other,
                }
            }
        }
        .instrument(span)
        .await;
        let ack = timed.done(result).map_err(PublishError::StoreBatch)?;
        Ok((0..protos.len()).map(|i| ack.sequence(i)).collect())
    }

    /// An ephemeral event: sent to the room's members now, never stored.
    /// With a key it is sent once: a retry gets the first answer and sends
    /// nothing (an earlier attempt that left no answer may have sent it).
    async fn ephemeral(&self, event: ValidEvent) -> Result<Value, PublishError> {
        let id = self.ids(1).remove(0);
        let answer = json!({"id": id, "ephemeral": true});
        if let Some(key) = self.key {
            match self.claim(key).await? {
                Held::Mine => {}
                Held::Answered(r) => return Ok(r),
                // An earlier attempt may have sent it: at most once.
                Held::Unanswered(_) => return Ok(answer),
            }
        }
        let (room, event) = event.into_proto(id, self.tenant.as_str(), now_ms(), true);
        let timed = self.state.metrics.publish(PublishKind::Ephemeral);
        let sent = async {
            self.state
                .bus
                .client
                .publish_with_headers(
                    subjects::room_ephemeral(self.tenant, &room),
                    trace_headers(),
                    event.encode_to_vec().into(),
                )
                .await
        }
        .instrument(publish_span(1))
        .await;
        timed.done(sent).map_err(PublishError::Ephemeral)?;
        if let Some(key) = self.key {
            self.complete(key, &answer).await;
        }
        Ok(answer)
    }
}

/// The span of a publish when traces are exported (else a disabled one):
/// the messages carry its context.
fn publish_span(messages: usize) -> tracing::Span {
    if switchboard_platform::telemetry::exporting() {
        tracing::info_span!(
            "jetstream.publish",
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = subjects::ROOMS_STREAM,
            messaging.batch.message_count = messages,
        )
    } else {
        tracing::Span::none()
    }
}
