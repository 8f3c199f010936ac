//! One WebSocket connection: its token, its rooms, its bounded outbound
//! queue. A single task per connection reads client messages, writes queued
//! frames, pings, and closes with the code PROTOCOL.md gives for each reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError};
use bytestring::ByteString;
use serde_json::{Value, json};
use switchboard_platform::Shutdown;
use switchboard_platform::nats::Bus;
use switchboard_proto::names::{EVENT_FILTER_RULE, EventFilter, ROOM_RULE};
use switchboard_proto::token::{Claims, Permissions};
use switchboard_proto::{RoomName, subjects};
use tokio::time::Instant;

use crate::config::Settings;
use crate::frames::{Envelope, ErrorCode, ErrorFrame, close, rfc3339_ms};
use crate::hub::{ConnHandle, ConnId, RoomHub};
use crate::tenants::TenantDirectory;

/// Bad messages in a row after which the connection is closed with 4000.
const ABUSE_LIMIT: u32 = 20;
/// Sent with `welcome`; coalescing of ephemeral events uses it.
const EPHEMERAL_INTERVAL_MS: u64 = 100;

/// What every session shares.
#[derive(Clone)]
pub struct Gateway {
    pub hub: RoomHub,
    pub tenants: TenantDirectory,
    pub bus: Bus,
    pub settings: Arc<Settings>,
    pub shutdown: Shutdown,
}

struct Session {
    gw: Gateway,
    claims: Claims,
    conn: ConnHandle,
    ws: actix_ws::Session,
    rooms: HashMap<RoomName, ()>,
    bad_in_a_row: u32,
}

enum Flow {
    Continue,
    Close(u16, &'static str),
}

pub fn new_conn_id() -> ConnId {
    Arc::from(format!("c_{}", uuid::Uuid::now_v7().simple()))
}

/// Runs a connection to its end.
pub async fn run(
    gw: Gateway,
    claims: Claims,
    ws: actix_ws::Session,
    mut stream: AggregatedMessageStream,
) {
    let (conn, mut rx, kill) = ConnHandle::new(new_conn_id(), gw.settings.outbound_queue);
    let heartbeat = gw.settings.heartbeat;
    let mut shutdown = gw.shutdown.clone();
    let token_exp = claims.exp;
    let mut s = Session {
        gw,
        claims,
        conn,
        ws,
        rooms: HashMap::new(),
        bad_in_a_row: 0,
    };
    s.gw.hub.metrics().connections.inc();
    tracing::debug!(conn = %s.conn.id, tenant = %s.claims.tenant, sub = %s.claims.sub, "connected");

    let welcome = json!({
        "type": "welcome",
        "protocol": 1,
        "conn_id": &*s.conn.id,
        "tenant": s.claims.tenant,
        "sub": s.claims.sub,
        "heartbeat_ms": heartbeat.as_millis() as u64,
        "max_frame_bytes": s.gw.settings.max_frame_bytes,
        "ephemeral_interval_ms": EPHEMERAL_INTERVAL_MS,
        "token_exp": token_exp,
    });
    let mut outcome = if s.send(&welcome).await {
        Flow::Continue
    } else {
        Flow::Close(close::NORMAL, "")
    };

    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    let mut last_heard = Instant::now();
    let expires_in = (token_exp - chrono::Utc::now().timestamp()).max(0) as u64;
    let expiry = tokio::time::sleep(Duration::from_secs(expires_in));
    tokio::pin!(expiry);

    while matches!(outcome, Flow::Continue) {
        outcome = tokio::select! {
            biased;
            code = kill.wait() => Flow::Close(code, "slow consumer: outbound queue overflowed"),
            _ = shutdown.wait() => {
                let window = s.gw.settings.drain.as_millis().max(1) as u64;
                let after_ms = rand::random_range(0..window);
                s.send(&json!({"type": "reconnect", "reason": "draining", "after_ms": after_ms})).await;
                Flow::Close(close::RESTART, "gateway draining")
            }
            frame = rx.recv() => match frame {
                Some(bytes) => match ByteString::try_from(bytes) {
                    Ok(text) => if s.ws.text(text).await.is_ok() { Flow::Continue } else { Flow::Close(close::NORMAL, "") },
                    Err(_) => Flow::Continue,
                },
                None => Flow::Continue,
            },
            msg = stream.recv() => {
                last_heard = Instant::now();
                match msg {
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        s.gw.hub.metrics().frames_in.inc();
                        s.on_text(&text).await
                    }
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        s.bad(None, ErrorFrame::new(ErrorCode::BadRequest,
                            "binary frames are not part of the protocol: send JSON text frames")).await
                    }
                    Some(Ok(AggregatedMessage::Ping(p))) => {
                        let _ = s.ws.pong(&p).await;
                        Flow::Continue
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => Flow::Continue,
                    Some(Ok(AggregatedMessage::Close(_))) | None => Flow::Close(close::NORMAL, ""),
                    Some(Err(ProtocolError::Overflow)) => Flow::Close(close::TOO_BIG, "frame larger than max_frame_bytes"),
                    Some(Err(ProtocolError::Io(e))) if e.to_string().contains("continuation") => {
                        Flow::Close(close::TOO_BIG, "message larger than max_frame_bytes")
                    }
                    Some(Err(e)) => {
                        tracing::debug!(conn = %s.conn.id, error = %e, "protocol error");
                        Flow::Close(1002, "protocol error")
                    }
                }
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > heartbeat * 2 {
                    Flow::Close(close::NORMAL, "heartbeat timeout: nothing heard for two intervals")
                } else if s.ws.ping(b"").await.is_err() {
                    Flow::Close(close::NORMAL, "")
                } else {
                    Flow::Continue
                }
            }
            _ = &mut expiry => Flow::Close(close::TOKEN_EXPIRED, "token expired"),
        };
    }

    let Flow::Close(code, reason) = outcome else {
        unreachable!("the loop only ends on Close")
    };
    for room in std::mem::take(&mut s.rooms).into_keys() {
        s.gw.hub.leave(&s.claims.tenant, &room, &s.conn.id);
    }
    s.gw.hub.metrics().connections.dec();
    let reason = CloseReason {
        code: CloseCode::from(code),
        description: (!reason.is_empty()).then(|| reason.to_owned()),
    };
    let _ = s.ws.close(Some(reason)).await;
    tracing::debug!(conn = %s.conn.id, code, "closed");
}

fn field<'a>(env: &'a Envelope, name: &str) -> Option<&'a Value> {
    env.rest.get(name).filter(|v| !v.is_null())
}

impl Session {
    async fn send(&mut self, v: &Value) -> bool {
        self.ws.text(v.to_string()).await.is_ok()
    }

    async fn reply(&mut self, id: &Option<Value>, mut v: Value) -> Flow {
        if let Some(id) = id {
            v["ref"] = id.clone();
        }
        self.bad_in_a_row = 0;
        if self.send(&v).await {
            Flow::Continue
        } else {
            Flow::Close(close::NORMAL, "")
        }
    }

    /// Answers with an error frame. Malformed input counts toward the abuse
    /// limit; a refusal of a well-formed request does not.
    async fn bad(&mut self, id: Option<&Value>, e: ErrorFrame) -> Flow {
        if e.code == ErrorCode::BadRequest {
            self.bad_in_a_row += 1;
        }
        if !self.send(&e.to_json(id)).await {
            return Flow::Close(close::NORMAL, "");
        }
        if self.bad_in_a_row >= ABUSE_LIMIT {
            return Flow::Close(close::ABUSE, "too many bad messages");
        }
        Flow::Continue
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return self
                    .bad(
                        None,
                        ErrorFrame::new(ErrorCode::BadRequest, format!("message is not JSON: {e}")),
                    )
                    .await;
            }
        };
        if !value.is_object() {
            return self
                .bad(
                    None,
                    ErrorFrame::new(
                        ErrorCode::BadRequest,
                        "message must be a JSON object with an 'op'",
                    ),
                )
                .await;
        }
        let env: Envelope = serde_json::from_value(value).expect("a JSON object fits the envelope");
        let id = env.id.clone();
        if id
            .as_ref()
            .is_some_and(|v| !(v.is_string() || v.is_i64() || v.is_u64()))
        {
            return self
                .bad(
                    None,
                    ErrorFrame::bad_field("id", "field 'id' must be a string or an integer"),
                )
                .await;
        }
        let op = match env.op.as_ref().and_then(Value::as_str) {
            Some(op) => op.to_owned(),
            None => {
                return self
                    .bad(
                        id.as_ref(),
                        ErrorFrame::bad_field(
                            "op",
                            "field 'op' is required (a string such as \"join\")",
                        ),
                    )
                    .await;
            }
        };
        let result = match op.as_str() {
            "join" => self.join(&env).await,
            "leave" => self.leave(&env).await.map(Some),
            "filter" => self.filter(&env).await.map(Some),
            "ping" => {
                let now = rfc3339_ms(chrono::Utc::now().timestamp_millis());
                return self.reply(&id, json!({"type": "pong", "ts": now})).await;
            }
            other => Err(ErrorFrame::bad_field(
                "op",
                format!("unknown op '{other}' (this gateway handles join, leave, filter and ping)"),
            )),
        };
        match result {
            Ok(Some(frame)) => self.reply(&id, frame).await,
            Ok(None) => {
                self.bad_in_a_row = 0;
                Flow::Continue
            }
            Err(e) => self.bad(id.as_ref(), e).await,
        }
    }

    fn room_field(&self, op: &str, env: &Envelope) -> Result<RoomName, ErrorFrame> {
        let raw = field(env, "room").and_then(Value::as_str).ok_or_else(|| {
            ErrorFrame::bad_field(
                "room",
                format!("{op}: field 'room' is required (a room name matching {ROOM_RULE})"),
            )
        })?;
        RoomName::parse(raw).map_err(|_| {
            ErrorFrame::bad_field(
                "room",
                format!("{op}: field 'room' must be a room name matching {ROOM_RULE}"),
            )
            .in_room(raw)
        })
    }

    fn types_field(op: &str, env: &Envelope) -> Result<Vec<EventFilter>, ErrorFrame> {
        let Some(v) = field(env, "types") else {
            return Ok(Vec::new());
        };
        let bad = || {
            ErrorFrame::bad_field(
                "types",
                format!(
                    "{op}: field 'types' must be an array of event filters, each {EVENT_FILTER_RULE}"
                ),
            )
        };
        v.as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|t| {
                t.as_str()
                    .and_then(|s| EventFilter::parse(s).ok())
                    .ok_or_else(bad)
            })
            .collect()
    }

    /// Answers `joined` itself (it must precede the room's events), so it
    /// returns no frame for the caller to send.
    async fn join(&mut self, env: &Envelope) -> Result<Option<Value>, ErrorFrame> {
        let room = self.room_field("join", env)?;
        let filters = Self::types_field("join", env)?;
        let since = match field(env, "since") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                ErrorFrame::bad_field(
                    "since",
                    "join: field 'since' must be a whole number (the last seq you hold)",
                )
                .in_room(room.as_str())
            })?),
        };
        if !self.claims.allows(&room, Permissions::READ) {
            return Err(ErrorFrame::new(
                ErrorCode::Forbidden,
                format!("join: your token does not grant 'read' on room '{room}'"),
            )
            .in_room(room.as_str()));
        }
        let tenant = self.claims.tenant.clone();
        if !self.rooms.contains_key(&room) {
            let limit = self
                .gw
                .tenants
                .get(&tenant)
                .map(|t| t.limits.rooms_per_connection)
                .unwrap_or(0) as usize;
            if limit != 0 && self.rooms.len() >= limit {
                return Err(ErrorFrame::new(
                    ErrorCode::TooManyRooms,
                    format!("join: this connection is in {limit} rooms, the most allowed; leave one first"),
                )
                .in_room(room.as_str()));
            }
        } else {
            // A second join restarts the membership with the new filters.
            self.gw.hub.leave(&tenant, &room, &self.conn.id);
            self.rooms.remove(&room);
        }
        let unavailable = || {
            ErrorFrame::new(
                ErrorCode::Unavailable,
                "join: the message broker is unreachable; retry later",
            )
            .in_room(room.as_str())
        };
        self.gw
            .hub
            .join(&tenant, &room, &self.conn, filters)
            .await
            .map_err(|_| unavailable())?;
        let seq = match self.last_seq(&room).await {
            Ok(seq) => seq,
            Err(e) => {
                tracing::warn!(%tenant, %room, error = %e, "reading the room's last seq failed");
                self.gw.hub.leave(&tenant, &room, &self.conn.id);
                return Err(unavailable());
            }
        };
        self.rooms.insert(room.clone(), ());
        // Replay of missed events is not done here yet: a `since` behind the
        // room's seq is reported as not recovered, so the client reloads.
        let recovered = since.is_some_and(|s| s >= seq);
        let joined = json!({
            "type": "joined", "room": room, "seq": seq,
            "recovered": recovered, "missed": 0,
        });
        // `joined` must reach the socket before any event of the room: send
        // it now, then release the events held since the subscription.
        let joined = match &env.id {
            Some(id) => {
                let mut j = joined;
                j["ref"] = id.clone();
                j
            }
            None => joined,
        };
        self.send(&joined).await;
        self.gw.hub.go_live(&tenant, &room, &self.conn.id, seq);
        Ok(None)
    }

    async fn last_seq(&self, room: &RoomName) -> Result<u64, async_nats::Error> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let stream = self
            .gw
            .bus
            .jetstream
            .get_stream_no_info(subjects::ROOMS_STREAM)
            .await?;
        match stream
            .get_last_raw_message_by_subject(&subjects::room_event(&self.claims.tenant, room))
            .await
        {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    async fn leave(&mut self, env: &Envelope) -> Result<Value, ErrorFrame> {
        let room = self.room_field("leave", env)?;
        if self.rooms.remove(&room).is_none() {
            return Err(ErrorFrame::new(
                ErrorCode::NotJoined,
                format!("leave: this connection has not joined room '{room}'"),
            )
            .in_room(room.as_str()));
        }
        self.gw.hub.leave(&self.claims.tenant, &room, &self.conn.id);
        Ok(json!({"type": "left", "room": room}))
    }

    async fn filter(&mut self, env: &Envelope) -> Result<Value, ErrorFrame> {
        let room = self.room_field("filter", env)?;
        if field(env, "types").is_none() {
            return Err(ErrorFrame::bad_field(
                "types",
                "filter: field 'types' is required (an array of event filters; [] for all events)",
            ));
        }
        let filters = Self::types_field("filter", env)?;
        if !self.rooms.contains_key(&room)
            || !self
                .gw
                .hub
                .set_filters(&self.claims.tenant, &room, &self.conn.id, filters)
        {
            return Err(ErrorFrame::new(
                ErrorCode::NotJoined,
                format!("filter: this connection has not joined room '{room}'"),
            )
            .in_room(room.as_str()));
        }
        Ok(json!({"type": "ok"}))
    }
}
