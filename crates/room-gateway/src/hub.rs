//! `RoomHub`: the rooms with members on this gateway. One core NATS
//! subscription per room while it has members (`sb.live` and `sb.eph`),
//! dropped when the last leaves. Each event frame is encoded once and the
//! same bytes are offered to every member's bounded queue; a full queue cuts
//! that member off (4008) and never delays the others.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use futures_util::StreamExt;
use prost::Message as _;
use switchboard_proto::names::EventFilter;
use switchboard_proto::{RoomName, TenantId, pb, subjects};
use tokio::sync::{Notify, watch};

use crate::frames::{Frame, close, event_frame};
use crate::history::{Entry, FetchError, History, chain_entries, fetch_range, last_seq};
use crate::metrics::GatewayMetrics;

pub type ConnId = Arc<str>;

/// What the hub holds of a connection: its queue and a way to cut it off.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    outbox: Arc<Outbox>,
}

/// A connection's bounded outbound queue and its kill switch, shared by the
/// hub (which offers frames) and the session (which writes them). One
/// allocation per connection; the queue holds no memory until a frame comes,
/// and gives it back after a burst.
pub struct Outbox {
    queue: Mutex<VecDeque<Frame>>,
    cap: usize,
    /// Wakes the session when frames were queued.
    queued: Notify,
    code: AtomicU16,
    killed: Notify,
}

/// Queue capacity kept after draining; more is given back.
const KEEP_CAPACITY: usize = 8;

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Frame>> {
        self.queue
            .lock()
            .expect("outbox lock is never poisoned: no code panics while holding it")
    }

    /// Asks the session to close with `code`; the first reason wins.
    pub fn fire(&self, code: u16) {
        if self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.killed.notify_one();
        }
    }

    /// Resolves with the close code once fired.
    pub async fn killed(&self) -> u16 {
        loop {
            let code = self.code.load(Ordering::Acquire);
            if code != 0 {
                return code;
            }
            self.killed.notified().await;
        }
    }

    /// Resolves when frames may be queued (a wake-up can find none).
    pub async fn queued(&self) {
        self.queued.notified().await;
    }

    /// Moves up to `out.len()` queued frames into `out`; how many.
    pub fn take(&self, out: &mut [Option<Frame>]) -> usize {
        let mut q = self.lock();
        let n = q.len().min(out.len());
        for (slot, frame) in out.iter_mut().zip(q.drain(..n)) {
            *slot = Some(frame);
        }
        if q.is_empty() && q.capacity() > KEEP_CAPACITY {
            *q = VecDeque::new();
        }
        n
    }
}

impl ConnHandle {
    pub fn new(id: ConnId, queue: usize) -> Self {
        Self {
            id,
            outbox: Arc::new(Outbox {
                queue: Mutex::new(VecDeque::new()),
                cap: queue.max(1),
                queued: Notify::new(),
                code: AtomicU16::new(0),
                killed: Notify::new(),
            }),
        }
    }

    pub fn outbox(&self) -> Arc<Outbox> {
        self.outbox.clone()
    }

    /// Queues a frame; a full queue cuts the connection off.
    fn offer(&self, frame: &Frame, metrics: &GatewayMetrics) {
        let o = &*self.outbox;
        let queued = {
            let mut q = o.lock();
            if q.len() < o.cap {
                q.push_back(frame.clone());
                true
            } else {
                false
            }
        };
        if queued {
            metrics.frames_out.inc();
            o.queued.notify_one();
            return;
        }
        if o.code.load(Ordering::Acquire) == 0 {
            metrics.slow_consumer_closes.inc();
            tracing::warn!(conn = %self.id, "slow consumer: outbound queue full, closing with 4008");
        }
        o.fire(close::SLOW_CONSUMER);
    }
}

/// A member's view of a room: frames it wants, and whether `joined` has been
/// sent yet (events arriving before that wait in `held`).
struct Member {
    conn: ConnHandle,
    filters: Vec<EventFilter>,
    /// Whether the token grants `presence` here (presence.* events).
    presence: bool,
    state: MemberState,
}

enum MemberState {
    Joining {
        held: Vec<(Option<u64>, Arc<str>, Frame)>,
    },
    Live {
        floor: u64,
    },
}

impl Member {
    fn wants(&self, event: &str) -> bool {
        if event.starts_with("presence.") && !self.presence {
            return false;
        }
        self.filters.is_empty() || self.filters.iter().any(|f| f.matches(event))
    }
}

/// A live event as the room task hands it to members.
struct Delivery<'a> {
    seq: Option<u64>,
    event: &'a Arc<str>,
    frame: &'a Frame,
    /// Connection that must not get it back (`echo: false`).
    skip: Option<&'a str>,
}

fn deliver(members: &Members, d: &Delivery<'_>, metrics: &GatewayMetrics) {
    let mut members = lock(members);
    for m in members.values_mut() {
        if !m.wants(d.event) || d.skip.is_some_and(|c| *c == *m.conn.id) {
            continue;
        }
        match &mut m.state {
            MemberState::Joining { held } => held.push((d.seq, d.event.clone(), d.frame.clone())),
            MemberState::Live { floor } => {
                if d.seq.is_none_or(|s| s > *floor) {
                    m.conn.offer(d.frame, metrics);
                }
            }
        }
    }
}

type Members = Mutex<HashMap<ConnId, Member>>;

struct Room {
    members: Arc<Members>,
    ready: watch::Receiver<Option<bool>>,
    task: tokio::task::AbortHandle,
    history: Arc<Mutex<History>>,
    /// One JetStream fetch per room at a time: joiners that wait for it
    /// find its events in `history`.
    fetch: Arc<tokio::sync::Mutex<()>>,
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
    drops: LiveDrops,
    js: jetstream::Context,
    rooms: Mutex<HashMap<String, Room>>,
    metrics: GatewayMetrics,
    /// Bounds JetStream fetches (replays and gap healing) across all rooms.
    fetches: tokio::sync::Semaphore,
    history_cap: usize,
    /// Events the stream keeps per room: a full room may have lost its oldest.
    room_history: usize,
}

/// Counts messages the live connection dropped (its subscriptions were
/// full). Rooms that go quiet after a drop check JetStream for a lost tail,
/// which no later `prev` would reveal.
/// A watch channel, so a room that is already idle when the drop is
/// reported still wakes up to check.
#[derive(Clone)]
pub struct LiveDrops(Arc<watch::Sender<u64>>);

impl Default for LiveDrops {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl LiveDrops {
    pub fn callback(&self) -> Arc<dyn Fn() + Send + Sync> {
        let count = self.0.clone();
        Arc::new(move || count.send_modify(|n| *n += 1))
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// How long a room must be quiet after a drop before it checks for a lost
/// tail.
const TAIL_CHECK_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// Tuning of the hub, from the gateway's settings.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    pub history_cap: usize,
    pub concurrent_fetches: usize,
    pub room_history: usize,
}

fn key(tenant: &TenantId, room: &RoomName) -> String {
    format!("{tenant}.{room}")
}

impl RoomHub {
    /// `live` carries the room subscriptions; `js` (another connection)
    /// the fetches that fill gaps and replays.
    pub fn new(
        live: async_nats::Client,
        drops: LiveDrops,
        js: jetstream::Context,
        metrics: GatewayMetrics,
        limits: HubLimits,
    ) -> Self {
        Self {
            inner: Arc::new(HubInner {
                js,
                drops,
                client: live,
                rooms: Mutex::new(HashMap::new()),
                metrics,
                fetches: tokio::sync::Semaphore::new(limits.concurrent_fetches.max(1)),
                history_cap: limits.history_cap,
                room_history: limits.room_history,
            }),
        }
    }

    /// Events of the room after `since` up to `until`, from this gateway's
    /// history or else from JetStream (one fetch per room at a time, a
    /// bounded number at once). `None`: the stream no longer holds every
    /// event after `since`, so nothing is replayed.
    pub async fn replay(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        since: u64,
        until: u64,
    ) -> Result<Option<Vec<Entry>>, FetchError> {
        if until <= since {
            return Ok(Some(Vec::new()));
        }
        let Some((history, fetch)) = self
            .rooms()
            .get(&key(tenant, room))
            .map(|r| (r.history.clone(), r.fetch.clone()))
        else {
            return Ok(None);
        };
        if let Some(hit) = lock_history(&history).chain(since, until) {
            return Ok(Some(hit));
        }
        let _one_per_room = fetch.lock().await;
        if let Some(hit) = lock_history(&history).chain(since, until) {
            return Ok(Some(hit));
        }
        let _permit = self
            .inner
            .fetches
            .acquire()
            .await
            .expect("the fetch semaphore is never closed");
        self.inner.metrics.replays_fetched.inc();
        if since > 0 && !self.is_event_of(tenant, room, since).await? {
            return Ok(None);
        }
        let events = fetch_range(&self.inner.js, tenant, room, since + 1, until).await?;
        if since == 0 && events.len() >= self.inner.room_history {
            // The room is at its history limit: older events may be gone.
            return Ok(None);
        }
        let entries = chain_entries(since, events);
        let mut h = lock_history(&history);
        for e in &entries {
            h.insert(e.clone());
        }
        Ok(Some(entries))
    }

    /// Whether the stream still holds `seq` and it belongs to this room.
    async fn is_event_of(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        seq: u64,
    ) -> Result<bool, FetchError> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let stream = self
            .inner
            .js
            .get_stream_no_info(subjects::ROOMS_STREAM)
            .await
            .map_err(|e| FetchError::JetStream(e.into()))?;
        match stream.direct_get(seq).await {
            Ok(m) => Ok(m.subject.as_str() == subjects::room_event(tenant, room)),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(false),
            Err(e) => Err(FetchError::JetStream(e.into())),
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
        presence: bool,
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
                    presence,
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

    /// Whether `conn` may see presence events in the room (after `refresh`).
    pub fn set_presence(&self, tenant: &TenantId, room: &RoomName, conn: &ConnId, presence: bool) {
        let rooms = self.rooms();
        if let Some(entry) = rooms.get(&key(tenant, room))
            && let Some(m) = lock(&entry.members).get_mut(conn)
        {
            m.presence = presence;
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
        let history = Arc::new(Mutex::new(History::new(self.inner.history_cap)));
        let (ready_tx, ready) = watch::channel(None);
        let task = tokio::spawn(run_room(
            RoomTask {
                hub: self.clone(),
                tenant: tenant.clone(),
                room: room.clone(),
                members: members.clone(),
                history: history.clone(),
            },
            ready_tx,
        ))
        .abort_handle();
        self.inner.metrics.rooms.inc();
        Room {
            members,
            ready,
            task,
            history,
            fetch: Arc::default(),
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

fn lock_history(h: &Mutex<History>) -> std::sync::MutexGuard<'_, History> {
    h.lock()
        .expect("history lock is never poisoned: no code panics while holding it")
}

struct RoomTask {
    hub: RoomHub,
    tenant: TenantId,
    room: RoomName,
    members: Arc<Members>,
    history: Arc<Mutex<History>>,
}

impl RoomTask {
    fn metrics(&self) -> &GatewayMetrics {
        &self.hub.inner.metrics
    }

    async fn last_seq(&self) -> Result<u64, async_nats::Error> {
        last_seq(&self.hub.inner.js, &self.tenant, &self.room).await
    }

    /// Fills the gap between the last delivered event and one whose `prev`
    /// is ahead of it, from JetStream, before that event is delivered.
    async fn heal(&self, last: u64, prev: u64) {
        let fetched = {
            let _permit = self.hub.inner.fetches.acquire().await;
            fetch_range(&self.hub.inner.js, &self.tenant, &self.room, last + 1, prev).await
        };
        match fetched {
            Ok(events) => {
                for e in chain_entries(last, events) {
                    self.stored(e);
                }
                self.metrics().gaps_healed.inc();
                tracing::info!(tenant = %self.tenant, room = %self.room, last, prev, "healed a gap in live events");
            }
            Err(e) => {
                tracing::warn!(tenant = %self.tenant, room = %self.room, error = %e, "gap could not be healed");
            }
        }
    }

    fn stored(&self, e: Entry) {
        deliver(
            &self.members,
            &Delivery {
                seq: Some(e.seq),
                event: &e.event,
                frame: &e.frame,
                skip: None,
            },
            self.metrics(),
        );
        lock_history(&self.history).insert(e);
    }
}

/// One room's subscriptions: decode, encode the frame once, offer it to
/// every member; heal gaps in the `prev` chain before going on.
async fn run_room(task: RoomTask, ready: watch::Sender<Option<bool>>) {
    let client = &task.hub.inner.client;
    let subscribed = async {
        let live = client
            .subscribe(subjects::room_live(&task.tenant, &task.room))
            .await?;
        let eph = client
            .subscribe(subjects::room_ephemeral(&task.tenant, &task.room))
            .await?;
        // The server has the subscriptions once it answers the flush's ping:
        // only then may `joined` promise live events.
        client.flush().await?;
        let last = task.last_seq().await?;
        Ok::<_, async_nats::Error>((live, eph, last))
    }
    .await;
    let (mut live, mut eph, mut last_seq) = match subscribed {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(tenant = %task.tenant, room = %task.room, error = %e, "cannot subscribe room");
            let _ = ready.send(Some(false));
            return;
        }
    };
    let _ = ready.send(Some(true));
    let mut drops = task.hub.inner.drops.subscribe();
    // Set when the live connection dropped messages: the room checks for a
    // lost tail once it has been quiet for TAIL_CHECK_AFTER.
    let mut tail_check: Option<tokio::time::Instant> = None;
    loop {
        let (msg, stored) = tokio::select! {
            Some(m) = live.next() => (m, true),
            Some(m) = eph.next() => (m, false),
            Ok(()) = drops.changed() => {
                tail_check = Some(tokio::time::Instant::now() + TAIL_CHECK_AFTER);
                continue;
            }
            _ = tokio::time::sleep_until(tail_check.unwrap_or_else(tokio::time::Instant::now)), if tail_check.is_some() => {
                tail_check = None;
                match task.last_seq().await {
                    Ok(latest) if latest > last_seq => {
                        task.metrics().gaps_detected.inc();
                        task.heal(last_seq, latest).await;
                        last_seq = latest;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "tail check failed"),
                }
                continue;
            }
            else => break,
        };
        if let Some(due) = &mut tail_check {
            // Still busy: wait for quiet, the prev chain covers gaps meanwhile.
            *due = tokio::time::Instant::now() + TAIL_CHECK_AFTER;
        }
        let Ok(ev) = pb::RoomEvent::decode(msg.payload.clone()) else {
            tracing::warn!(subject = %msg.subject, "undecodable room event dropped");
            continue;
        };
        let name: Arc<str> = Arc::from(ev.event.as_str());
        let skip = ev.no_echo.then_some(ev.origin_conn.as_str());
        if !stored {
            let frame = event_frame(&ev, None);
            deliver(
                &task.members,
                &Delivery {
                    seq: None,
                    event: &name,
                    frame: &frame,
                    skip,
                },
                task.metrics(),
            );
            continue;
        }
        let (Some(seq), Some(prev)) = (
            header_u64(&msg, "Nats-Sequence"),
            header_u64(&msg, "Nats-Last-Sequence"),
        ) else {
            tracing::warn!(subject = %msg.subject, "live event without sequence headers dropped");
            continue;
        };
        if seq <= last_seq {
            continue; // already delivered (healed earlier)
        }
        if prev > last_seq {
            task.metrics().gaps_detected.inc();
            task.heal(last_seq, prev).await;
        }
        last_seq = seq;
        let frame = event_frame(&ev, Some((seq, prev)));
        deliver(
            &task.members,
            &Delivery {
                seq: Some(seq),
                event: &name,
                frame: &frame,
                skip,
            },
            task.metrics(),
        );
        lock_history(&task.history).insert(Entry {
            seq,
            prev,
            event: name,
            frame,
        });
    }
}
