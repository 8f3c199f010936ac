//! `RoomHub`: the rooms with members on this gateway. One core NATS
//! subscription per room while it has members (`sb.live` and `sb.eph`),
//! dropped when the last leaves. Each event frame is encoded once and the
//! same bytes are offered to every member's bounded queue; a full queue cuts
//! that member off (4008) and never delays the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message as _;
use switchboard_proto::names::EventFilter;
use switchboard_proto::{RoomName, TenantId, pb, subjects};
use tokio::sync::{Notify, mpsc, watch};

use crate::frames::{close, event_frame};
use crate::metrics::GatewayMetrics;

pub type ConnId = Arc<str>;

/// What the hub holds of a connection: its queue and a way to cut it off.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    tx: mpsc::Sender<Bytes>,
    kill: Arc<Kill>,
}

#[derive(Default)]
pub struct Kill {
    code: AtomicU16,
    notify: Notify,
}

impl Kill {
    /// Asks the session to close with `code`; the first reason wins.
    pub fn fire(&self, code: u16) {
        if self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.notify.notify_one();
        }
    }

    /// Resolves with the close code once fired.
    pub async fn wait(&self) -> u16 {
        loop {
            let code = self.code.load(Ordering::Acquire);
            if code != 0 {
                return code;
            }
            self.notify.notified().await;
        }
    }
}

impl ConnHandle {
    pub fn new(id: ConnId, queue: usize) -> (Self, mpsc::Receiver<Bytes>, Arc<Kill>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let kill = Arc::new(Kill::default());
        (
            Self {
                id,
                tx,
                kill: kill.clone(),
            },
            rx,
            kill,
        )
    }

    /// Queues a frame; a full queue cuts the connection off.
    fn offer(&self, frame: &Bytes, metrics: &GatewayMetrics) {
        match self.tx.try_send(frame.clone()) {
            Ok(()) => {
                metrics.frames_out.inc();
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.kill.code.load(Ordering::Acquire) == 0 {
                    metrics.slow_consumer_closes.inc();
                    tracing::warn!(conn = %self.id, "slow consumer: outbound queue full, closing with 4008");
                }
                self.kill.fire(close::SLOW_CONSUMER);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// A member's view of a room: frames it wants, and whether `joined` has been
/// sent yet (events arriving before that wait in `held`).
struct Member {
    conn: ConnHandle,
    filters: Vec<EventFilter>,
    state: MemberState,
}

enum MemberState {
    Joining {
        held: Vec<(Option<u64>, Arc<str>, Bytes)>,
    },
    Live {
        floor: u64,
    },
}

impl Member {
    fn wants(&self, event: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| f.matches(event))
    }
}

type Members = Mutex<HashMap<ConnId, Member>>;

struct Room {
    members: Arc<Members>,
    ready: watch::Receiver<Option<bool>>,
    task: tokio::task::AbortHandle,
}

/// Why a join could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the message broker is unreachable")]
    Unavailable,
}

#[derive(Clone)]
pub struct RoomHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    client: async_nats::Client,
    rooms: Mutex<HashMap<String, Room>>,
    metrics: GatewayMetrics,
}

fn key(tenant: &TenantId, room: &RoomName) -> String {
    format!("{tenant}.{room}")
}

impl RoomHub {
    pub fn new(client: async_nats::Client, metrics: GatewayMetrics) -> Self {
        Self {
            inner: Arc::new(HubInner {
                client,
                rooms: Mutex::new(HashMap::new()),
                metrics,
            }),
        }
    }

    pub fn metrics(&self) -> &GatewayMetrics {
        &self.inner.metrics
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
        self.inner
            .rooms
            .lock()
            .expect("room map lock is never poisoned: no code panics while holding it")
    }

    /// Adds `conn` to the room, subscribing the room if it is new here. Live
    /// events are held for it until [`RoomHub::go_live`], so the caller can
    /// send `joined` first.
    pub async fn join(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        conn: &ConnHandle,
        filters: Vec<EventFilter>,
    ) -> Result<(), JoinError> {
        let mut ready = {
            let mut rooms = self.rooms();
            let entry = rooms
                .entry(key(tenant, room))
                .or_insert_with(|| self.open_room(tenant, room));
            lock(&entry.members).insert(
                conn.id.clone(),
                Member {
                    conn: conn.clone(),
                    filters,
                    state: MemberState::Joining { held: Vec::new() },
                },
            );
            entry.ready.clone()
        };
        let ok = match ready.wait_for(Option::is_some).await {
            Ok(v) => v.unwrap_or(false),
            Err(_) => false,
        };
        if ok {
            Ok(())
        } else {
            self.leave(tenant, room, &conn.id);
            Err(JoinError::Unavailable)
        }
    }

    /// Releases held events newer than `floor` (the `seq` reported in
    /// `joined`) and delivers live from now on.
    pub fn go_live(&self, tenant: &TenantId, room: &RoomName, conn: &ConnId, floor: u64) {
        let rooms = self.rooms();
        let Some(entry) = rooms.get(&key(tenant, room)) else {
            return;
        };
        let mut members = lock(&entry.members);
        if let Some(m) = members.get_mut(conn) {
            let held = match std::mem::replace(&mut m.state, MemberState::Live { floor }) {
                MemberState::Joining { held } => held,
                MemberState::Live { .. } => Vec::new(),
            };
            for (seq, _, frame) in held {
                if seq.is_none_or(|s| s > floor) {
                    m.conn.offer(&frame, &self.inner.metrics);
                }
            }
        }
    }

    /// Changes the event filters of a member.
    pub fn set_filters(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        conn: &ConnId,
        filters: Vec<EventFilter>,
    ) -> bool {
        let rooms = self.rooms();
        let Some(entry) = rooms.get(&key(tenant, room)) else {
            return false;
        };
        let mut members = lock(&entry.members);
        match members.get_mut(conn) {
            Some(m) => {
                m.filters = filters;
                true
            }
            None => false,
        }
    }

    /// Removes `conn` from the room; the last member out drops the room's
    /// subscription.
    pub fn leave(&self, tenant: &TenantId, room: &RoomName, conn: &ConnId) {
        let mut rooms = self.rooms();
        let k = key(tenant, room);
        let empty = match rooms.get(&k) {
            Some(entry) => {
                let mut members = lock(&entry.members);
                members.remove(conn);
                members.is_empty()
            }
            None => false,
        };
        if empty && let Some(entry) = rooms.remove(&k) {
            entry.task.abort();
            self.inner.metrics.rooms.dec();
        }
    }

    fn open_room(&self, tenant: &TenantId, room: &RoomName) -> Room {
        let members: Arc<Members> = Arc::default();
        let (ready_tx, ready) = watch::channel(None);
        let task = tokio::spawn(run_room(
            self.inner.client.clone(),
            tenant.clone(),
            room.clone(),
            members.clone(),
            ready_tx,
            self.inner.metrics.clone(),
        ))
        .abort_handle();
        self.inner.metrics.rooms.inc();
        Room {
            members,
            ready,
            task,
        }
    }
}

fn lock(m: &Members) -> std::sync::MutexGuard<'_, HashMap<ConnId, Member>> {
    m.lock()
        .expect("member map lock is never poisoned: no code panics while holding it")
}

fn header_u64(msg: &async_nats::Message, name: &str) -> Option<u64> {
    msg.headers.as_ref()?.get(name)?.as_str().parse().ok()
}

/// One room's subscriptions: decode, encode the frame once, offer it to
/// every member.
async fn run_room(
    client: async_nats::Client,
    tenant: TenantId,
    room: RoomName,
    members: Arc<Members>,
    ready: watch::Sender<Option<bool>>,
    metrics: GatewayMetrics,
) {
    let subscribed = async {
        let live = client
            .subscribe(subjects::room_live(&tenant, &room))
            .await?;
        let eph = client
            .subscribe(subjects::room_ephemeral(&tenant, &room))
            .await?;
        // The server has the subscriptions once it answers the flush's ping:
        // only then may `joined` promise live events.
        client.flush().await?;
        Ok::<_, async_nats::Error>((live, eph))
    }
    .await;
    let (mut live, mut eph) = match subscribed {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%tenant, %room, error = %e, "cannot subscribe room");
            let _ = ready.send(Some(false));
            return;
        }
    };
    let _ = ready.send(Some(true));
    let mut last_seq = 0u64;
    loop {
        let (msg, stored) = tokio::select! {
            Some(m) = live.next() => (m, true),
            Some(m) = eph.next() => (m, false),
            else => break,
        };
        let Ok(ev) = pb::RoomEvent::decode(msg.payload.clone()) else {
            tracing::warn!(subject = %msg.subject, "undecodable room event dropped");
            continue;
        };
        let seq_prev = if stored {
            let (Some(seq), Some(prev)) = (
                header_u64(&msg, "Nats-Sequence"),
                header_u64(&msg, "Nats-Last-Sequence"),
            ) else {
                tracing::warn!(subject = %msg.subject, "live event without sequence headers dropped");
                continue;
            };
            if last_seq != 0 && prev != last_seq {
                metrics.gaps_detected.inc();
                tracing::warn!(%tenant, %room, prev, last_seq, "gap in live events");
            }
            last_seq = seq;
            Some((seq, prev))
        } else {
            None
        };
        let frame = event_frame(&ev, seq_prev);
        let name: Arc<str> = Arc::from(ev.event.as_str());
        let seq = seq_prev.map(|(s, _)| s);
        let mut members = lock(&members);
        for m in members.values_mut() {
            if !m.wants(&name) {
                continue;
            }
            match &mut m.state {
                MemberState::Joining { held } => held.push((seq, name.clone(), frame.clone())),
                MemberState::Live { floor } => {
                    if seq.is_none_or(|s| s > *floor) {
                        m.conn.offer(&frame, &metrics);
                    }
                }
            }
        }
    }
}
