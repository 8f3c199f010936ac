//! `RoomHub`: the rooms with members on this gateway. Each room has one
//! task ([`room`]) that owns its sequence: it holds the room's core
//! subscriptions while it has members, delivers events in `seq` order,
//! heals gaps from JetStream before going on, and checks for a lost tail
//! after the live connection may have dropped messages. The join handshake
//! — held events, the floor, the replay, going live — is [`join`]'s.
//!
//! Each event frame is encoded once and the same bytes are offered to every
//! member's outbox; a member whose outbox overflows is cut off (4008) and
//! never delays the others.

mod join;
mod member;
mod room;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use switchboard_proto::names::EventFilter;
use switchboard_proto::{RoomName, TenantId};
use tokio::sync::{oneshot, watch};

pub use join::{Entered, JoinError, JoinSpec};
pub use member::{ConnHandle, ConnId};

use crate::bus::Bus;
use crate::history::History;
use crate::metrics::GatewayMetrics;
use crate::protocol::{Frame, MsgId};
use member::{MemberState, Members, PendingAck};

/// Tuning of the hub, from the gateway's settings.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Recent events kept per room for replays.
    pub history_cap: usize,
    /// JetStream fetches (replays, heals) at once, across rooms.
    pub concurrent_fetches: usize,
    /// Events held for a joining member at most (the outbound queue's
    /// capacity).
    pub held: usize,
}

#[derive(Clone)]
pub struct RoomHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    bus: Bus,
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    metrics: GatewayMetrics,
    limits: HubLimits,
    /// Bounds JetStream fetches for replays across all rooms…
    fetches: tokio::sync::Semaphore,
    /// …and, apart, for heals: a storm of joins never starves live rooms.
    heals: tokio::sync::Semaphore,
}

/// One room with local members.
struct Room {
    tenant: TenantId,
    name: RoomName,
    members: Mutex<Members>,
    /// `Some(true)` once subscribed, `Some(false)` if that failed.
    ready: watch::Receiver<Option<bool>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
    /// Set (under the members lock) when its last member left: the room is
    /// on its way out of the map, and a joiner must open a new one.
    closed: AtomicBool,
    history: Mutex<History>,
    /// One JetStream replay fetch per room at a time: joiners that waited
    /// for it find its events in `history`.
    fetch: tokio::sync::Mutex<()>,
    /// The last seq the room's task has delivered (or skipped, telling the
    /// members to resync): a joiner's floor. Stored under the members lock.
    latest: AtomicU64,
    /// The room's state as joiners get it, read from KV `SB_ROOM_STATE` and
    /// read again once a `state.updated` event says it changed.
    state: Mutex<StateCache>,
}

/// The room's state, and whether it is known to be current.
#[derive(Default)]
struct StateCache {
    /// Read from KV at least once.
    loaded: bool,
    value: Option<switchboard_proto::room_state::RoomState>,
    /// The seq of the newest `state.updated` event delivered: a value older
    /// than it is stale (the KV is written right after that event is
    /// stored).
    announced: u64,
}

impl StateCache {
    fn current(&self) -> Option<Option<switchboard_proto::room_state::RoomState>> {
        let seq = self.value.as_ref().map_or(0, |v| v.seq);
        (self.loaded && seq >= self.announced).then(|| self.value.clone())
    }
}

impl Room {
    fn members(&self) -> MutexGuard<'_, Members> {
        self.members
            .lock()
            .expect("member map lock is never poisoned: no code panics while holding it")
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history
            .lock()
            .expect("history lock is never poisoned: no code panics while holding it")
    }

    fn state(&self) -> MutexGuard<'_, StateCache> {
        self.state
            .lock()
            .expect("state cache lock is never poisoned: no code panics while holding it")
    }

    fn latest(&self) -> u64 {
        self.latest.load(Ordering::Acquire)
    }
}

fn key(tenant: &TenantId, room: &RoomName) -> String {
    format!("{tenant}.{room}")
}

impl RoomHub {
    pub fn new(bus: Bus, metrics: GatewayMetrics, limits: HubLimits) -> Self {
        Self {
            inner: Arc::new(HubInner {
                bus,
                rooms: Mutex::new(HashMap::new()),
                metrics,
                fetches: tokio::sync::Semaphore::new(limits.concurrent_fetches),
                heals: tokio::sync::Semaphore::new(limits.concurrent_fetches),
                limits,
            }),
        }
    }

    pub fn metrics(&self) -> &GatewayMetrics {
        &self.inner.metrics
    }

    /// Rooms with local members, per tenant.
    pub fn rooms_by_tenant(&self) -> HashMap<TenantId, u64> {
        let mut out: HashMap<TenantId, u64> = HashMap::new();
        for r in self.rooms().values() {
            *out.entry(r.tenant.clone()).or_default() += 1;
        }
        out
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<String, Arc<Room>>> {
        self.inner
            .rooms
            .lock()
            .expect("room map lock is never poisoned: no code panics while holding it")
    }

    fn room(&self, tenant: &TenantId, room: &RoomName) -> Option<Arc<Room>> {
        self.rooms().get(&key(tenant, room)).cloned()
    }

    /// Runs `f` on `conn`'s membership in the room, if it has one.
    fn with_member<T>(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        conn: &str,
        f: impl FnOnce(&mut member::Member) -> T,
    ) -> Option<T> {
        let r = self.room(tenant, room)?;
        let mut members = r.members();
        members.get_mut(conn).map(f)
    }

    /// Changes a member's event filters; its `prev` chain starts afresh
    /// after `ok`, which is queued here, before any event of the new filters.
    pub fn set_filters(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        conn: &str,
        filters: Vec<EventFilter>,
        ok: &Frame,
    ) -> bool {
        let metrics = self.inner.metrics.clone();
        self.with_member(tenant, room, conn, |m| {
            m.filters = filters;
            if let MemberState::Live { last, .. } = &mut m.state {
                *last = None;
            }
            m.conn.offer(ok, &metrics);
        })
        .is_some()
    }

    /// Whether `conn` may see presence events in the room (after `refresh`).
    pub fn set_presence(&self, tenant: &TenantId, room: &RoomName, conn: &str, presence: bool) {
        self.with_member(tenant, room, conn, |m| m.presence = presence);
    }

    /// Before a client's stored publish: the room will send `conn` the ack
    /// where its event stands in the room's order — just before the event,
    /// or in its place with `echo: false` (`None`: `conn` is not a member
    /// here, the caller acks itself). The receiver resolves once the ack is
    /// queued.
    pub fn expect_ack(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        conn: &str,
        event_id: &str,
        r#ref: Option<MsgId>,
    ) -> Option<oneshot::Receiver<()>> {
        let (sent, rx) = oneshot::channel();
        self.with_member(tenant, room, conn, |m| {
            m.acks
                .push((event_id.to_owned(), PendingAck { r#ref, sent }));
        })?;
        Some(rx)
    }

    /// Withdraws an expected ack; true when the room had not sent it (the
    /// caller then answers itself).
    pub fn forget_ack(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        conn: &str,
        event_id: &str,
    ) -> bool {
        self.with_member(tenant, room, conn, |m| m.take_ack(event_id).is_some())
            .unwrap_or(true)
    }

    /// Removes `conn` from the room; the last member out closes the room.
    /// The map's lock is never held while waiting for a room's members
    /// (which a fan-out to thousands of sockets holds for a while).
    pub fn leave(&self, tenant: &TenantId, room: &RoomName, conn: &str) {
        let Some(r) = self.room(tenant, room) else {
            return;
        };
        let empty = {
            let mut members = r.members();
            members.remove(conn);
            let empty = members.is_empty();
            if empty {
                r.closed.store(true, Ordering::Release);
            }
            empty
        };
        if !empty {
            return;
        }
        let k = key(tenant, room);
        let mut rooms = self.rooms();
        if rooms.get(&k).is_some_and(|x| Arc::ptr_eq(x, &r)) {
            rooms.remove(&k);
            drop(rooms);
            if let Some(task) = r
                .task
                .lock()
                .expect("room task lock is never poisoned")
                .take()
            {
                task.abort();
            }
            self.inner.metrics.rooms.dec();
        }
    }
}
