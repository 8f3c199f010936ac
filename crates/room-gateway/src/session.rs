//! One WebSocket connection: its token, its rooms, its bounded outbound
//! queue. A single task per connection reads client messages, writes queued
//! frames, pings, watches its token's expiry, and closes with the code
//! PROTOCOL.md gives for each reason.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use serde_json::{Value, json};
use switchboard_platform::Shutdown;
use switchboard_platform::nats::{
    Bus, PublishEventError, publish_room_event, send_stored, trace_headers,
};
use switchboard_proto::names::{EVENT_FILTER_RULE, EVENT_RULE, EventFilter, ROOM_RULE};
use switchboard_proto::token::{Claims, Permissions};
use switchboard_proto::{EventName, RoomName, ids, pb, subjects};
use tokio::time::{Instant, Sleep};

use crate::audit::{self, ConnMeta};
use crate::config::Settings;
use crate::frames::{Envelope, ErrorCode, ErrorFrame, Frame, close, rfc3339_ms};
use crate::history::last_seq;
use crate::hub::{ConnHandle, ConnId, Outbox, RoomHub};
use crate::presence::Presence;
use crate::slots::{ConnectionSlots, Slot};
use crate::tenants::TenantDirectory;
use crate::wire::{self, Incoming, ReadError, WsReader, WsWriter};

/// Bad messages in a row after which the connection is closed with 4000.
const ABUSE_LIMIT: u32 = 20;
/// Sent with `welcome`: ephemeral events of one connection, room and event
/// name are forwarded at most this often.
const EPHEMERAL_INTERVAL: Duration = Duration::from_millis(100);
/// `token_expiring` comes this long before `exp`.
const TOKEN_WARNING: Duration = Duration::from_secs(30);
/// Rate-limited messages (beyond the limit) tolerated before closing with 4029.
const RATE_VIOLATIONS_BEFORE_CLOSE: f64 = 20.0;

/// What every session shares.
#[derive(Clone)]
pub struct Gateway {
    pub hub: RoomHub,
    pub tenants: TenantDirectory,
    pub bus: Bus,
    pub presence: Presence,
    pub slots: ConnectionSlots,
    /// Sessions still running (closing ones included): the gateway stops
    /// its server only when these are done or the drain time is up.
    pub sessions: Arc<std::sync::atomic::AtomicUsize>,
    pub settings: Arc<Settings>,
    pub shutdown: Shutdown,
}

/// A token bucket: `rate` per second, holding at most `burst`.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            rate,
            burst,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Ephemeral events of one (room, event name) waiting for their interval.
struct EphemeralSlot {
    last_sent: Instant,
    pending: Option<(RoomName, pb::RoomEvent)>,
}

struct Session {
    /// Shared, not cloned: an idle connection should hold a pointer, not
    /// the gateway's handles.
    gw: Arc<Gateway>,
    claims: Claims,
    conn: ConnHandle,
    ws: WsWriter,
    rooms: HashMap<RoomName, ()>,
    bad_in_a_row: u32,
    /// `None`: the tenant has no message limit.
    rate: Option<Bucket>,
    violations: Bucket,
    ephemeral: HashMap<(RoomName, String), EphemeralSlot>,
    expiring: Pin<Box<Sleep>>,
    expiry: Pin<Box<Sleep>>,
    warned: bool,
}

enum Flow {
    Continue,
    Close(u16, &'static str),
}

pub fn new_conn_id() -> ConnId {
    Arc::from(format!("c_{}", uuid::Uuid::now_v7().simple()))
}

fn deadline_of(exp: i64, before: Duration) -> Instant {
    let left = exp - chrono::Utc::now().timestamp();
    let left = Duration::from_secs(left.max(0) as u64).saturating_sub(before);
    Instant::now() + left
}

/// Counts a running session for as long as it lives.
struct Alive(Arc<std::sync::atomic::AtomicUsize>);

impl Alive {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Runs a connection to its end.
pub async fn run(
    gw: Arc<Gateway>,
    claims: Claims,
    meta: ConnMeta,
    slot: Slot,
    ws: WsWriter,
    mut stream: WsReader,
) {
    let _alive = Alive::new(&gw.sessions);
    let conn = ConnHandle::new(new_conn_id(), gw.settings.outbound_queue);
    let heartbeat = gw.settings.heartbeat;
    let mut shutdown = gw.shutdown.clone();
    let per_s = gw
        .tenants
        .get(&claims.tenant)
        .map(|t| t.limits.client_msgs_per_s)
        .unwrap_or(50);
    let mut s = Session {
        expiring: Box::pin(tokio::time::sleep_until(deadline_of(
            claims.exp,
            TOKEN_WARNING,
        ))),
        expiry: Box::pin(tokio::time::sleep_until(deadline_of(
            claims.exp,
            Duration::ZERO,
        ))),
        gw,
        claims,
        conn,
        ws,
        rooms: HashMap::new(),
        bad_in_a_row: 0,
        rate: (per_s > 0).then(|| Bucket::new(per_s as f64, 2.0 * per_s as f64)),
        violations: Bucket::new(1.0, RATE_VIOLATIONS_BEFORE_CLOSE),
        ephemeral: HashMap::new(),
        warned: false,
    };
    s.gw.hub.metrics().connections.inc();
    audit::opened(&s.gw.bus, &s.claims, &s.conn.id, &meta);
    tracing::debug!(conn = %s.conn.id, tenant = %s.claims.tenant, sub = %s.claims.sub, "connected");

    let welcome = json!({
        "type": "welcome",
        "protocol": 1,
        "conn_id": &*s.conn.id,
        "tenant": s.claims.tenant,
        "sub": s.claims.sub,
        "heartbeat_ms": heartbeat.as_millis() as u64,
        "max_frame_bytes": s.gw.settings.max_frame_bytes,
        "ephemeral_interval_ms": EPHEMERAL_INTERVAL.as_millis() as u64,
        "token_exp": s.claims.exp,
    });
    let mut outcome = if s.send(&welcome).await {
        Flow::Continue
    } else {
        Flow::Close(close::NORMAL, "")
    };

    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    // One future for the whole connection, not a new one per loop turn.
    let outbox = s.conn.outbox();
    let killed = outbox.killed();
    tokio::pin!(killed);
    let mut last_heard = Instant::now();

    while matches!(outcome, Flow::Continue) {
        let next_ephemeral = s.next_ephemeral_flush();
        outcome = tokio::select! {
            biased;
            code = &mut killed => Flow::Close(code, "slow consumer: outbound queue overflowed"),
            _ = shutdown.wait() => {
                let window = s.gw.settings.drain.as_millis().max(1) as u64;
                let after_ms = rand::random_range(0..window);
                s.send(&json!({"type": "reconnect", "reason": "draining", "after_ms": after_ms})).await;
                Flow::Close(close::RESTART, "gateway draining")
            }
            // A client this far behind takes nothing more from its queue:
            // the queue fills and the hub cuts it off (4008).
            // Write what is queued in one go before looking at anything
            // else: one system call for many frames under load.
            _ = outbox.queued(), if !s.ws.backed_up() => s.write_queued(&outbox),
            flushed = s.ws.flush_some(), if s.ws.has_pending() => match flushed {
                Ok(()) => Flow::Continue,
                Err(wire::Closed) => Flow::Close(close::NORMAL, ""),
            },
            msg = stream.recv() => {
                last_heard = Instant::now();
                match msg {
                    Some(Ok(Incoming::Text(text))) => {
                        s.gw.hub.metrics().frames_in.inc();
                        // Boxed: handling a message (join, replay…) needs far
                        // more state than an idle connection should carry.
                        Box::pin(s.on_text(&text)).await
                    }
                    Some(Ok(Incoming::Binary)) => {
                        s.bad(None, ErrorFrame::new(ErrorCode::BadRequest,
                            "binary frames are not part of the protocol: send JSON text frames")).await
                    }
                    Some(Ok(Incoming::Ping(p))) => {
                        let _ = s.ws.pong(&p);
                        Flow::Continue
                    }
                    Some(Ok(Incoming::Pong)) => Flow::Continue,
                    Some(Ok(Incoming::Close)) | None => Flow::Close(close::NORMAL, ""),
                    Some(Err(ReadError::TooBig)) => Flow::Close(close::TOO_BIG, "message larger than max_frame_bytes"),
                    Some(Err(ReadError::Protocol(e))) => {
                        tracing::debug!(conn = %s.conn.id, error = %e, "protocol error");
                        Flow::Close(1002, "protocol error")
                    }
                }
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > heartbeat * 2 {
                    Flow::Close(close::NORMAL, "heartbeat timeout: nothing heard for two intervals")
                } else if s.ws.ping(b"").is_err() {
                    Flow::Close(close::NORMAL, "")
                } else {
                    Flow::Continue
                }
            }
            _ = tokio::time::sleep_until(next_ephemeral.unwrap_or_else(Instant::now)), if next_ephemeral.is_some() => {
                Box::pin(s.flush_ephemeral()).await;
                Flow::Continue
            }
            _ = &mut s.expiring, if !s.warned => {
                s.warned = true;
                let exp = s.claims.exp;
                s.send(&json!({"type": "token_expiring", "token_exp": exp})).await;
                Flow::Continue
            }
            _ = &mut s.expiry => Flow::Close(close::TOKEN_EXPIRED, "token expired: refresh before token_exp"),
        };
    }

    let Flow::Close(code, reason) = outcome else {
        unreachable!("the loop only ends on Close")
    };
    for room in std::mem::take(&mut s.rooms).into_keys() {
        Box::pin(s.depart(&room)).await;
    }
    s.gw.hub.metrics().connections.dec();
    audit::closed(&s.gw.bus, &s.claims, &s.conn.id, &meta, code);
    // The connection no longer counts against the tenant's limit while a
    // slow client's backlog and close frame drain.
    drop(slot);
    s.ws.close(code, reason).await;
    tracing::debug!(conn = %s.conn.id, code, "closed");
    drop(s);
    stream.linger().await;
}

fn field<'a>(env: &'a Envelope, name: &str) -> Option<&'a Value> {
    env.rest.get(name).filter(|v| !v.is_null())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Session {
    /// Writes what is queued, a batch per system call, until the queue is
    /// empty or the client falls behind.
    fn write_queued(&mut self, outbox: &Outbox) -> Flow {
        loop {
            if self.ws.backed_up() {
                return Flow::Continue;
            }
            let mut batch: [Option<Frame>; wire::MAX_BATCH] = [const { None }; wire::MAX_BATCH];
            let n = outbox.take(&mut batch);
            if n == 0 {
                return Flow::Continue;
            }
            if let Flow::Close(code, why) = self.write_batch(&batch[..n]) {
                return Flow::Close(code, why);
            }
        }
    }

    fn write_batch(&mut self, batch: &[Option<Frame>]) -> Flow {
        let n = batch.len();
        let mut texts: [&[u8]; wire::MAX_BATCH] = [&[]; wire::MAX_BATCH];
        for (t, f) in texts.iter_mut().zip(batch.iter().flatten()) {
            *t = AsRef::<[u8]>::as_ref(f);
        }
        match self.ws.push_texts(&texts[..n]) {
            Ok(()) => Flow::Continue,
            Err(wire::Closed) => Flow::Close(close::NORMAL, ""),
        }
    }

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
        if let Some(rate) = &mut self.rate
            && !rate.take()
        {
            self.gw.hub.metrics().rate_limited.inc();
            if !self.violations.take() {
                return Flow::Close(close::RATE_LIMITED, "sustained rate-limit violation");
            }
            let e = ErrorFrame::new(
                ErrorCode::RateLimited,
                "too many messages: this connection may send the tenant's client_msgs_per_s (burst twice that); the message was dropped",
            );
            return if self.send(&e.to_json(None)).await {
                Flow::Continue
            } else {
                Flow::Close(close::NORMAL, "")
            };
        }
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
            "publish" => self.publish(&env).await.map(Some),
            "send" => self.send_command(&env).await.map(Some),
            "presence" => self.presence(&env).await.map(Some),
            "refresh" => match self.refresh(&env).await {
                Ok(frame) => Ok(Some(frame)),
                Err(Refresh::Refused(e)) => {
                    let _ = self.send(&e.to_json(id.as_ref())).await;
                    return Flow::Close(close::TOKEN_EXPIRED, "refresh with a bad token");
                }
                Err(Refresh::Bad(e)) => Err(e),
            },
            "ping" => {
                let now = rfc3339_ms(now_ms());
                return self.reply(&id, json!({"type": "pong", "ts": now})).await;
            }
            other => Err(ErrorFrame::bad_field(
                "op",
                format!(
                    "unknown op '{other}' (one of join, leave, filter, publish, send, presence, ping, refresh)"
                ),
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

    fn key_field(op: &str, env: &Envelope) -> Result<Option<String>, ErrorFrame> {
        match field(env, "key") {
            None => Ok(None),
            Some(Value::String(k)) if !k.is_empty() && k.len() <= 255 => Ok(Some(k.clone())),
            Some(_) => Err(ErrorFrame::bad_field(
                "key",
                format!("{op}: field 'key' must be a string of 1 to 255 characters"),
            )),
        }
    }

    fn bool_field(
        op: &str,
        env: &Envelope,
        name: &'static str,
        default: bool,
    ) -> Result<bool, ErrorFrame> {
        match field(env, name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ErrorFrame::bad_field(
                name,
                format!("{op}: field '{name}' must be true or false"),
            )),
        }
    }

    fn forbidden(op: &str, room: &RoomName, permission: &str) -> ErrorFrame {
        ErrorFrame::new(
            ErrorCode::Forbidden,
            format!("{op}: your token does not grant '{permission}' on room '{room}'"),
        )
        .in_room(room.as_str())
    }

    fn unavailable(op: &str, room: &RoomName) -> ErrorFrame {
        ErrorFrame::new(
            ErrorCode::Unavailable,
            format!("{op}: the message broker is unreachable; nothing was stored, retry later with the same key"),
        )
        .in_room(room.as_str())
    }

    /// Answers `joined` itself, then the room's state and missed events (they
    /// must precede live ones), so it returns no frame for the caller.
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
        let perms = self.claims.permissions(&room);
        if !perms.contains(Permissions::READ) {
            return Err(Self::forbidden("join", &room, "read"));
        }
        let tenant = self.claims.tenant.clone();
        if self.rooms.contains_key(&room) {
            // A second join restarts the membership with the new filters.
            self.gw.hub.leave(&tenant, &room, &self.conn.id);
            self.rooms.remove(&room);
        } else {
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
        }
        let presence = perms.contains(Permissions::PRESENCE);
        self.gw
            .hub
            .join(&tenant, &room, &self.conn, filters.clone(), presence)
            .await
            .map_err(|_| Self::unavailable("join", &room))?;
        let prepared = self.prepare_join(&room, since, &filters).await;
        let (seq, replay) = match prepared {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%tenant, %room, error = %e, "join could not read the room");
                self.gw.hub.leave(&tenant, &room, &self.conn.id);
                return Err(Self::unavailable("join", &room));
            }
        };
        self.rooms.insert(room.clone(), ());
        let (recovered, missed) = match (&since, &replay) {
            (None, _) => (false, Vec::new()),
            (Some(_), Some(frames)) => (true, frames.clone()),
            (Some(_), None) => (false, Vec::new()),
        };
        let mut joined = json!({
            "type": "joined", "room": room, "seq": seq,
            "recovered": recovered, "missed": missed.len(),
        });
        if let Some(id) = &env.id {
            joined["ref"] = id.clone();
        }
        // The presence entry exists before the client hears `joined`, so a
        // second connection of the same sub right after sees this one.
        self.arrive(&room).await;
        self.send(&joined).await;
        if let Some(state) = self.room_state(&room).await {
            self.send(&state).await;
        }
        for frame in missed {
            let _ = self.ws.text(frame).await;
        }
        self.gw.hub.go_live(&tenant, &room, &self.conn.id, seq);
        Ok(None)
    }

    /// The room's latest seq, and for a `since`, the frames after it (`None`
    /// when the stream can no longer give all of them).
    async fn prepare_join(
        &self,
        room: &RoomName,
        since: Option<u64>,
        filters: &[EventFilter],
    ) -> Result<(u64, Option<Vec<Frame>>), async_nats::Error> {
        let seq = self.last_seq(room).await?;
        let Some(since) = since else {
            return Ok((seq, None));
        };
        let replay = self
            .gw
            .hub
            .replay(&self.claims.tenant, room, since, seq)
            .await?;
        let wanted = |event: &str| filters.is_empty() || filters.iter().any(|f| f.matches(event));
        Ok((
            seq,
            replay.map(|entries| {
                entries
                    .into_iter()
                    .filter(|e| wanted(&e.event))
                    .map(|e| e.frame)
                    .collect()
            }),
        ))
    }

    async fn room_state(&self, room: &RoomName) -> Option<Value> {
        let key = subjects::room_state_key(&self.claims.tenant, room);
        let bytes = match self.gw.bus.room_state.get(key).await {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "reading room state failed");
                return None;
            }
        };
        let state: switchboard_proto::room_state::RoomState =
            serde_json::from_slice(&bytes).ok()?;
        Some(json!({"type": "state", "room": room, "seq": state.seq, "data": state.data}))
    }

    async fn last_seq(&self, room: &RoomName) -> Result<u64, async_nats::Error> {
        last_seq(&self.gw.bus.jetstream, &self.claims.tenant, room).await
    }

    /// Presence bookkeeping after a join: the entry, and `presence.joined`
    /// when this is the sub's first connection in the room.
    async fn arrive(&self, room: &RoomName) {
        let info = self
            .claims
            .info
            .clone()
            .map(Value::Object)
            .unwrap_or(Value::Null);
        match self
            .gw
            .presence
            .enter(
                &self.claims.tenant,
                room,
                &self.conn.id,
                &self.claims.sub,
                info.clone(),
            )
            .await
        {
            Ok(true) => self.presence_event(room, "presence.joined", info).await,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "presence entry not written"),
        }
    }

    /// Leaves the hub and presence; `presence.left` for the sub's last
    /// connection in the room.
    async fn depart(&self, room: &RoomName) {
        self.gw.hub.leave(&self.claims.tenant, room, &self.conn.id);
        match self
            .gw
            .presence
            .exit(&self.claims.tenant, room, &self.conn.id, &self.claims.sub)
            .await
        {
            Ok(true) => {
                let info = self
                    .claims
                    .info
                    .clone()
                    .map(Value::Object)
                    .unwrap_or(Value::Null);
                self.presence_event(room, "presence.left", info).await
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "presence entry not removed"),
        }
    }

    async fn presence_event(&self, room: &RoomName, event: &str, info: Value) {
        let ev = pb::RoomEvent {
            id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
            tenant: self.claims.tenant.to_string(),
            room: room.to_string(),
            event: event.to_owned(),
            data: json!({"sub": self.claims.sub, "info": info})
                .to_string()
                .into_bytes(),
            source: "gateway".into(),
            ts_unix_ms: now_ms(),
            ephemeral: true,
            ..Default::default()
        };
        let subject = subjects::room_ephemeral(&self.claims.tenant, room);
        if let Err(e) = self
            .gw
            .bus
            .client
            .publish(subject, ev.encode_to_vec().into())
            .await
        {
            tracing::warn!(error = %e, "presence event not sent");
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
        self.depart(&room).await;
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

    /// The id of a client's publish (`evt`) or send (`cmd`): derived from
    /// its `key` when given, so a retry is stored once, else fresh.
    fn message_id(&self, kind: &str, room: &RoomName, key: Option<&str>) -> String {
        match key {
            Some(k) => ids::derived_event_id(&[
                self.claims.tenant.as_str(),
                kind,
                room.as_str(),
                &self.claims.sub,
                k,
            ]),
            None => format!("{kind}_{}", uuid::Uuid::now_v7().simple()),
        }
    }

    fn event_field(op: &str, env: &Envelope, room: &RoomName) -> Result<EventName, ErrorFrame> {
        let raw = field(env, "event").and_then(Value::as_str).ok_or_else(|| {
            ErrorFrame::bad_field(
                "event",
                format!("{op}: field 'event' is required (an event name matching {EVENT_RULE})"),
            )
            .in_room(room.as_str())
        })?;
        EventName::parse(raw).map_err(|_| {
            ErrorFrame::bad_field(
                "event",
                format!("{op}: field 'event' must match {EVENT_RULE}"),
            )
            .in_room(room.as_str())
        })
    }

    fn data_field(env: &Envelope) -> Vec<u8> {
        env.rest
            .get("data")
            .cloned()
            .unwrap_or(Value::Null)
            .to_string()
            .into_bytes()
    }

    async fn publish(&mut self, env: &Envelope) -> Result<Value, ErrorFrame> {
        let room = self.room_field("publish", env)?;
        let event = Self::event_field("publish", env, &room)?;
        if !event.as_str().starts_with("client.") {
            return Err(ErrorFrame::bad_field(
                "event",
                "publish: field 'event' must start with 'client.' (e.g. client.typing); other events come from backends",
            )
            .in_room(room.as_str()));
        }
        let key = Self::key_field("publish", env)?;
        let ephemeral = Self::bool_field("publish", env, "ephemeral", false)?;
        let echo = Self::bool_field("publish", env, "echo", true)?;
        if !self.claims.allows(&room, Permissions::PUBLISH) {
            return Err(Self::forbidden("publish", &room, "publish"));
        }
        let tenant = self.claims.tenant.clone();
        let id = self.message_id("evt", &room, key.as_deref());
        let ev = pb::RoomEvent {
            id: id.clone(),
            tenant: tenant.to_string(),
            room: room.to_string(),
            event: event.into_string(),
            data: Self::data_field(env),
            source: self.claims.sub.clone(),
            ts_unix_ms: now_ms(),
            ephemeral,
            origin_conn: self.conn.id.to_string(),
            no_echo: !echo,
        };
        if ephemeral {
            self.queue_ephemeral(room.clone(), ev).await;
            return Ok(json!({"type": "ack", "room": room, "id": id}));
        }
        let ack = publish_room_event(&self.gw.bus.jetstream, &tenant, &room, &ev)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "client publish failed");
                Self::unavailable("publish", &room)
            })?;
        Ok(json!({"type": "ack", "room": room, "seq": ack.sequence, "id": id}))
    }

    /// Sends now if the (room, event) interval has passed, else keeps only
    /// the latest for the end of the interval.
    async fn queue_ephemeral(&mut self, room: RoomName, ev: pb::RoomEvent) {
        let slot_key = (room.clone(), ev.event.clone());
        let now = Instant::now();
        let slot = self.ephemeral.entry(slot_key).or_insert(EphemeralSlot {
            last_sent: now - EPHEMERAL_INTERVAL,
            pending: None,
        });
        if now.duration_since(slot.last_sent) >= EPHEMERAL_INTERVAL {
            slot.last_sent = now;
            slot.pending = None;
            self.send_ephemeral(&room, &ev).await;
        } else {
            slot.pending = Some((room, ev));
        }
    }

    fn next_ephemeral_flush(&self) -> Option<Instant> {
        self.ephemeral
            .values()
            .filter(|s| s.pending.is_some())
            .map(|s| s.last_sent + EPHEMERAL_INTERVAL)
            .min()
    }

    async fn flush_ephemeral(&mut self) {
        let now = Instant::now();
        let due: Vec<(RoomName, pb::RoomEvent)> = self
            .ephemeral
            .values_mut()
            .filter(|s| {
                s.pending.is_some() && now.duration_since(s.last_sent) >= EPHEMERAL_INTERVAL
            })
            .filter_map(|s| {
                s.last_sent = now;
                s.pending.take()
            })
            .collect();
        for (room, ev) in due {
            self.send_ephemeral(&room, &ev).await;
        }
        self.ephemeral.retain(|_, s| {
            s.pending.is_some() || now.duration_since(s.last_sent) < EPHEMERAL_INTERVAL * 10
        });
    }

    async fn send_ephemeral(&self, room: &RoomName, ev: &pb::RoomEvent) {
        let subject = subjects::room_ephemeral(&self.claims.tenant, room);
        if let Err(e) = self
            .gw
            .bus
            .client
            .publish_with_headers(subject, trace_headers(), ev.encode_to_vec().into())
            .await
        {
            tracing::warn!(error = %e, "ephemeral publish failed");
        }
    }

    async fn send_command(&mut self, env: &Envelope) -> Result<Value, ErrorFrame> {
        let room = self.room_field("send", env)?;
        let event = Self::event_field("send", env, &room)?;
        let key = Self::key_field("send", env)?;
        if !self.claims.allows(&room, Permissions::SEND) {
            return Err(Self::forbidden("send", &room, "send"));
        }
        let tenant = self.claims.tenant.clone();
        let id = self.message_id("cmd", &room, key.as_deref());
        let cmd = pb::ClientCommand {
            id: id.clone(),
            tenant: tenant.to_string(),
            room: room.to_string(),
            event: event.to_string(),
            data: Self::data_field(env),
            sub: self.claims.sub.clone(),
            conn_id: self.conn.id.to_string(),
            key: key.unwrap_or_default(),
            ts_unix_ms: now_ms(),
        };
        let stored = async {
            send_stored(
                &self.gw.bus.jetstream,
                subjects::inbox(&tenant, &event),
                &cmd,
                &id,
            )
            .await?
            .await
            .map_err(PublishEventError::from)
        }
        .await;
        stored.map_err(|e| {
            tracing::warn!(error = %e, "client send failed");
            Self::unavailable("send", &room)
        })?;
        Ok(json!({"type": "ack", "room": room, "id": id}))
    }

    async fn presence(&mut self, env: &Envelope) -> Result<Value, ErrorFrame> {
        let room = self.room_field("presence", env)?;
        if !self.claims.allows(&room, Permissions::PRESENCE) {
            return Err(Self::forbidden("presence", &room, "presence"));
        }
        if !self.rooms.contains_key(&room) {
            return Err(ErrorFrame::new(
                ErrorCode::NotJoined,
                format!("presence: this connection has not joined room '{room}'"),
            )
            .in_room(room.as_str()));
        }
        let members = self
            .gw
            .presence
            .members(&self.claims.tenant, &room)
            .await
            .map_err(|_| Self::unavailable("presence", &room))?;
        Ok(json!({"type": "presence", "room": room, "members": members}))
    }

    /// A new token for the same tenant and sub. Rooms it no longer grants
    /// are left (with a `left` frame), presence rights re-read.
    async fn refresh(&mut self, env: &Envelope) -> Result<Value, Refresh> {
        let raw = field(env, "token").and_then(Value::as_str).ok_or_else(|| {
            Refresh::Bad(ErrorFrame::bad_field(
                "token",
                "refresh: field 'token' is required (a JWT)",
            ))
        })?;
        let refused = |m: String| Refresh::Refused(ErrorFrame::bad_field("token", m));
        let claims = crate::auth::verify(raw, &self.gw.tenants, chrono::Utc::now().timestamp())
            .map_err(|e| refused(format!("refresh: {e}")))?;
        if claims.tenant != self.claims.tenant || claims.sub != self.claims.sub {
            return Err(refused(
                "refresh: the new token must have the same tenant and sub".into(),
            ));
        }
        self.claims = claims;
        self.warned = false;
        self.expiring
            .as_mut()
            .reset(deadline_of(self.claims.exp, TOKEN_WARNING));
        self.expiry
            .as_mut()
            .reset(deadline_of(self.claims.exp, Duration::ZERO));
        let rooms: Vec<RoomName> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let perms = self.claims.permissions(&room);
            if perms.contains(Permissions::READ) {
                self.gw.hub.set_presence(
                    &self.claims.tenant,
                    &room,
                    &self.conn.id,
                    perms.contains(Permissions::PRESENCE),
                );
            } else {
                self.rooms.remove(&room);
                self.depart(&room).await;
                self.send(&json!({"type": "left", "room": room, "reason": "the refreshed token does not grant read"}))
                    .await;
            }
        }
        Ok(json!({"type": "refreshed", "token_exp": self.claims.exp}))
    }
}

enum Refresh {
    /// Malformed request: an error frame, the connection goes on.
    Bad(ErrorFrame),
    /// A bad token: error frame, then close 4001.
    Refused(ErrorFrame),
}
