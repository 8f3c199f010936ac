//! One WebSocket connection. Its task runs the select loop below and
//! nothing else: it writes the connection's [`Outbox`] whenever the socket
//! takes more, reads client frames, pings, watches the token's expiry and
//! the gateway's drain, and closes with the code PROTOCOL.md gives for each
//! reason.
//!
//! Client messages are handled one at a time, in the order sent, by a
//! [`Session`] that the loop moves into the message's future and gets back
//! when it is done. Work that waits on NATS (a publish ack, a replay, a
//! presence write) therefore never stalls the socket: while it runs, the
//! loop goes on writing, pinging and reading (up to [`MAX_WAITING`] more
//! messages, then the client waits).
//!
//! What the messages do lives beside this file: [`membership`] (join,
//! leave, filter), [`publish`] (publish, send, ephemeral events),
//! [`presence`], [`token`] (refresh and expiry), [`limits`].

mod limits;
mod membership;
mod presence;
mod publish;
mod token;

use bytestring::ByteString;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use switchboard_proto::tenant::Limits;
use switchboard_proto::token::Claims;
use switchboard_proto::{RoomName, TenantId};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::audit::ConnMeta;
use crate::gateway::Gateway;
use crate::hub::ConnHandle;
use crate::outbox::{Outbox, Wrote};
use crate::protocol::{
    ClientMessage, ClientOp, CloseCode, ErrorCode, ErrorFrame, MsgId, PROTOCOL_VERSION,
    ServerFrame, rfc3339_ms,
};
use crate::slots::Slot;
use crate::wire::{Incoming, ReadError, WsReader};
use limits::{Admit, Limiter};
use publish::Ephemeral;
use token::TokenTimers;

/// Bad messages in a row after which the connection is closed with 4000.
const ABUSE_LIMIT: u32 = 20;
/// Client messages read ahead while one is being handled; beyond this the
/// socket is not read until the session catches up.
const MAX_WAITING: usize = 32;

/// What a handled message leaves the connection to do.
pub(crate) enum Flow {
    Continue,
    Close(CloseCode, &'static str),
}

/// The connection's state that client messages work on.
pub(crate) struct Session {
    /// Shared, not cloned: an idle connection should hold a pointer, not
    /// the gateway's handles.
    gw: Arc<Gateway>,
    conn: ConnHandle,
    claims: Claims,
    rooms: HashSet<RoomName>,
    bad_in_a_row: u32,
    ephemeral: Ephemeral,
}

/// What the loop hands a session to do.
enum Work {
    Message(ByteString),
    /// A binary frame: not part of the protocol.
    Binary,
    /// A message dropped by the rate limit: its error, in turn.
    Refused(Option<MsgId>),
    /// Send the ephemeral events whose interval has passed.
    Ephemeral,
}

type Busy = Pin<Box<dyn Future<Output = (Box<Session>, Flow)>>>;

/// The session, idle or at work on one message.
enum Ops {
    Idle(Box<Session>),
    Busy(Busy),
}

impl Ops {
    fn start(&mut self, work: Work) {
        let Ops::Idle(_) = self else {
            unreachable!("work starts only on an idle session")
        };
        let Ops::Idle(mut s) = std::mem::replace(self, Ops::Busy(Box::pin(std::future::pending())))
        else {
            unreachable!("checked above")
        };
        *self = Ops::Busy(Box::pin(async move {
            let flow = s.handle(work).await;
            (s, flow)
        }));
    }

    fn idle(&self) -> Option<&Session> {
        match self {
            Ops::Idle(s) => Some(s),
            Ops::Busy(_) => None,
        }
    }

    /// Resolves when the work in hand is done (never while idle).
    async fn done(&mut self) -> (Box<Session>, Flow) {
        match self {
            Ops::Busy(f) => f.as_mut().await,
            Ops::Idle(_) => std::future::pending().await,
        }
    }

    /// Waits for the work in hand, and returns the session.
    async fn finish(self) -> Box<Session> {
        match self {
            Ops::Idle(s) => s,
            Ops::Busy(f) => f.await.0,
        }
    }
}

pub fn new_conn_id() -> Arc<str> {
    Arc::from(format!("c_{}", uuid::Uuid::now_v7().simple()))
}

/// Counts a running session for as long as it lives.
struct Alive(Arc<AtomicUsize>);

impl Alive {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs a connection to its end.
pub async fn run(
    gw: Arc<Gateway>,
    claims: Claims,
    meta: ConnMeta,
    slot: Slot,
    socket: Arc<TcpStream>,
    mut reader: WsReader,
) {
    let _alive = Alive::new(&gw.sessions);
    let outbox = Arc::new(Outbox::new(socket, gw.settings.outbound_queue));
    let meter = gw.hub.metrics().tenants.of(&claims.tenant);
    let conn = ConnHandle {
        id: new_conn_id(),
        outbox: outbox.clone(),
        meter: meter.clone(),
    };
    let heartbeat = gw.settings.heartbeat;
    let mut shutdown = gw.shutdown.clone();
    let metrics = gw.hub.metrics().clone();
    metrics.connections.inc();
    let mut audit = gw.audit.opened(&claims, &conn.id, meta);
    tracing::debug!(conn = %conn.id, tenant = %claims.tenant, sub = %claims.sub, "connected");

    outbox.text(
        &ServerFrame::Welcome {
            protocol: PROTOCOL_VERSION,
            conn_id: &conn.id,
            tenant: claims.tenant.as_str(),
            sub: &claims.sub,
            heartbeat_ms: heartbeat.as_millis() as u64,
            max_frame_bytes: gw.settings.max_frame_bytes,
            ephemeral_interval_ms: publish::EPHEMERAL_INTERVAL.as_millis() as u64,
            token_exp: claims.exp,
        }
        .encode(),
    );

    // A refresh keeps the tenant: its limits are read afresh per message.
    let tenant = claims.tenant.clone();
    let mut limiter = Limiter::new(client_msgs_per_s(&gw, &tenant));
    let mut timers = TokenTimers::new(claims.exp);
    let mut ops = Ops::Idle(Box::new(Session {
        gw: gw.clone(),
        conn,
        claims,
        rooms: HashSet::new(),
        bad_in_a_row: 0,
        ephemeral: Ephemeral::default(),
    }));
    let mut waiting: VecDeque<Work> = VecDeque::new();
    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    let mut last_heard = Instant::now();

    // The token expired while a message was in hand (a refresh in it may
    // still save the connection).
    let mut expired = false;
    let (code, reason) = loop {
        if let Ops::Idle(session) = &ops {
            // Due ephemeral events go first: a stream of messages must not
            // hold them back.
            let due = session
                .ephemeral
                .next_due()
                .is_some_and(|t| t <= Instant::now());
            if due {
                ops.start(Work::Ephemeral);
            } else if let Some(work) = waiting.pop_front() {
                ops.start(work);
            }
        }
        let next_ephemeral = ops.idle().and_then(|s| s.ephemeral.next_due());
        tokio::select! {
            biased;
            wrote = std::future::poll_fn(|cx| outbox.poll_write(cx)) => match wrote {
                Wrote::Drained => {}
                Wrote::Killed(code) => break (code, kill_reason(code)),
                Wrote::Broken => break (CloseCode::Normal.code(), ""),
            },
            _ = shutdown.wait() => {
                let window = gw.settings.reconnect_spread.min(gw.settings.drain).as_millis().max(1) as u64;
                outbox.text(&ServerFrame::Reconnect {
                    reason: "draining",
                    after_ms: rand::random_range(0..window),
                }.encode());
                break (CloseCode::Restart.code(), "gateway draining");
            }
            (session, flow) = ops.done() => {
                // It was talking to us: alive, even if its reading waited.
                last_heard = Instant::now();
                if timers.follow(session.claims.exp) {
                    expired = false;
                }
                ops = Ops::Idle(session);
                if let Flow::Close(code, why) = flow {
                    break (code.code(), why);
                }
                if expired {
                    break (CloseCode::TokenExpired.code(), "token expired: refresh before token_exp");
                }
            }
            // Timers before the reader: a flood of frames never holds them off.
            _ = ticker.tick() => {
                if last_heard.elapsed() > heartbeat * 2 {
                    break (CloseCode::Normal.code(), "heartbeat timeout: nothing heard for two intervals");
                }
                outbox.ping();
            }
            due = timers.next(), if !expired => match due {
                token::Due::Warn => {
                    outbox.text(&ServerFrame::TokenExpiring { token_exp: timers.exp() }.encode());
                }
                token::Due::Expired if ops.idle().is_some() => {
                    break (CloseCode::TokenExpired.code(), "token expired: refresh before token_exp");
                }
                token::Due::Expired => expired = true,
            },
            _ = tokio::time::sleep_until(next_ephemeral.unwrap_or_else(Instant::now)), if next_ephemeral.is_some() => {
                ops.start(Work::Ephemeral);
            }
            msg = reader.recv(), if waiting.len() < MAX_WAITING => {
                last_heard = Instant::now();
                match msg {
                    Some(Ok(Incoming::Text(text))) => {
                        metrics.frames_in.inc();
                        meter.frames_in.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        match limiter.admit(client_msgs_per_s(&gw, &tenant)) {
                            Admit::Yes => waiting.push_back(Work::Message(text)),
                            Admit::Refused => {
                                metrics.rate_limited.inc();
                                // Answered in turn, after the messages before it.
                                waiting.push_back(Work::Refused(message_id(&text)));
                            }
                            Admit::Close => break (CloseCode::RateLimited.code(), "sustained rate-limit violation"),
                        }
                    }
                    Some(Ok(Incoming::Binary)) => waiting.push_back(Work::Binary),
                    Some(Ok(Incoming::Ping(p))) => {
                        outbox.pong(p);
                    }
                    Some(Ok(Incoming::Pong)) => {}
                    Some(Ok(Incoming::Close)) | None => break (CloseCode::Normal.code(), ""),
                    Some(Err(ReadError::TooBig)) => break (CloseCode::TooBig.code(), "message larger than max_frame_bytes"),
                    Some(Err(ReadError::Protocol(e))) => {
                        tracing::debug!(error = %e, "protocol error");
                        break (CloseCode::ProtocolError.code(), "protocol error");
                    }
                }
            }
        }
    };

    // The message in hand finishes (each NATS wait in it is bounded). The
    // connection leaves its rooms at once, then its close goes out while
    // its presence entries are removed.
    let session = ops.finish().await;
    session.leave_rooms();
    metrics.connections.dec();
    // The connection no longer counts against the tenant's limit while a
    // slow client's backlog and close frame drain.
    drop(slot);
    tokio::join!(outbox.close(code, reason), session.exit_presence_all());
    audit.closing(code);
    drop(audit);
    tracing::debug!(conn = %session.conn.id, code, "closed");
    drop(session);
    reader.linger().await;
}

/// The close reason of a connection cut off from outside the session.
fn kill_reason(code: u16) -> &'static str {
    match CloseCode::from_code(code) {
        Some(CloseCode::SlowConsumer) => "slow consumer: outbound queue overflowed",
        Some(CloseCode::Restart) => "a gap the stream cannot fill: reconnect and join with since",
        _ => "",
    }
}

/// The tenant's current `client_msgs_per_s` (the default when unknown).
fn client_msgs_per_s(gw: &Gateway, tenant: &TenantId) -> u32 {
    gw.tenants
        .get(tenant)
        .map(|t| t.limits.client_msgs_per_s)
        .unwrap_or(Limits::default().client_msgs_per_s)
}

/// The `id` of a message that will not be handled, for its error's `ref`.
fn message_id(text: &str) -> Option<MsgId> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<MsgId>,
    }
    serde_json::from_str::<IdOnly>(text)
        .ok()?
        .id
        .filter(|v| v.is_string() || v.is_i64() || v.is_u64())
}

impl Session {
    async fn handle(&mut self, work: Work) -> Flow {
        match work {
            Work::Message(text) => self.on_text(&text).await,
            Work::Binary => self.bad(
                None,
                ErrorFrame::new(
                    ErrorCode::BadRequest,
                    "binary frames are not part of the protocol: send JSON text frames",
                ),
            ),
            Work::Refused(id) => {
                self.push(
                    &ErrorFrame::new(
                        ErrorCode::RateLimited,
                        "too many messages: this connection may send the tenant's client_msgs_per_s (burst twice that); the message was dropped",
                    )
                    .frame(id.as_ref()),
                );
                Flow::Continue
            }
            Work::Ephemeral => {
                self.flush_ephemeral().await;
                Flow::Continue
            }
        }
    }

    fn push(&self, frame: &ServerFrame<'_>) {
        let metrics = self.gw.hub.metrics();
        self.conn.offer(&frame.encode(), metrics);
    }

    /// Answers with an error frame. Malformed input counts toward the abuse
    /// limit; a refusal of a well-formed request does not.
    fn bad(&mut self, id: Option<&MsgId>, e: ErrorFrame) -> Flow {
        if e.code == ErrorCode::BadRequest {
            self.bad_in_a_row += 1;
        }
        self.push(&e.frame(id));
        if self.bad_in_a_row >= ABUSE_LIMIT {
            return Flow::Close(CloseCode::Abuse, "too many bad messages");
        }
        Flow::Continue
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        if self.claims.exp <= chrono::Utc::now().timestamp() {
            // Every message, a join above all, needs a token still valid.
            return Flow::Close(
                CloseCode::TokenExpired,
                "token expired: refresh before token_exp",
            );
        }
        let msg = match ClientMessage::parse(text) {
            Ok(m) => m,
            Err(r) => return self.bad(r.id.as_ref(), r.error),
        };
        let id = msg.id;
        let id = id.as_ref();
        let done = match msg.op {
            ClientOp::Join(j) => self.join(j, id).await,
            ClientOp::Leave { room } => self.leave(room, id).await,
            ClientOp::Filter { room, types } => self.filter(room, types, id),
            ClientOp::Publish(p) => self.publish(p, id).await,
            ClientOp::Send(s) => self.send_command(s, id).await,
            ClientOp::Presence { room } => self.presence(room, id).await,
            ClientOp::Ping => {
                let ts = rfc3339_ms(chrono::Utc::now().timestamp_millis());
                self.push(&ServerFrame::Pong { r#ref: id, ts: &ts });
                Ok(())
            }
            ClientOp::Refresh { token } => match self.refresh(&token, id).await {
                Ok(()) => Ok(()),
                Err(token::Refused(e)) => {
                    self.push(&e.frame(id));
                    return Flow::Close(CloseCode::TokenExpired, "refresh with a bad token");
                }
            },
        };
        match done {
            Ok(()) => {
                self.bad_in_a_row = 0;
                Flow::Continue
            }
            Err(e) => self.bad(id, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_message_keeps_its_id_for_the_error() {
        assert_eq!(
            message_id(r#"{"op":"ping","id":7}"#),
            Some(serde_json::json!(7))
        );
        assert_eq!(
            message_id(r#"{"op":"ping","id":"x"}"#),
            Some(serde_json::json!("x"))
        );
        assert_eq!(message_id(r#"{"op":"ping","id":{}}"#), None);
        assert_eq!(message_id("nope"), None);
    }
}
