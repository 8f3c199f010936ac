//! Presence: who is in a room, across every gateway. Each connection in a
//! room has an entry in KV `SB_PRESENCE` (`{tenant}.{room}.{conn}`), which
//! its gateway refreshes; an entry whose `expires_at_ms` has passed counts
//! as gone, so a dead gateway's members vanish within three refresh
//! intervals even before the bucket's TTL removes them.
//!
//! Join and leave decisions ("is this the sub's first connection here?")
//! never read the bucket: for each room with local members the gateway
//! keeps a mirror of the other gateways' entries, read once when the room
//! gains its first local member and kept current from then on by a core
//! subscription to the room's KV subjects (every put and delete is a
//! message there; a copy older than the client's last reconnect is read
//! again).
//! nats-server answers a read of one room's keys by walking every key in
//! the bucket, so reading per decision cost it O(connections) per join.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use switchboard_platform::Shutdown;
use switchboard_proto::{RoomName, TenantId, subjects};

use crate::bus::{Bus, BusError, is_removal};
use crate::protocol::PresenceMember;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub sub: String,
    #[serde(default)]
    pub info: serde_json::Value,
    pub conn: String,
    /// The gateway instance that keeps this entry alive.
    #[serde(default)]
    pub gateway: String,
    pub expires_at_ms: i64,
}

#[derive(Clone)]
pub struct Presence {
    bus: Bus,
    /// This gateway instance's id, in its entries.
    gateway: Arc<str>,
    refresh: Duration,
    /// This gateway's entries by room key prefix (`{tenant}.{room}.`), then
    /// by connection; re-put every `refresh`.
    mine: Arc<Mutex<HashMap<String, HashMap<String, Entry>>>>,
    /// The other gateways' entries of each room with local members (and
    /// for [`MIRROR_LINGER`] after the last one left), by room key prefix.
    mirrors: Arc<Mutex<HashMap<String, Arc<Mirror>>>>,
}

/// Presence puts in flight at once while refreshing.
const REFRESH_CHUNK: usize = 64;

/// How long a room's mirror outlives its last local member, so a room whose
/// only member reconnects is not read again.
const MIRROR_LINGER: Duration = Duration::from_secs(30);

/// How long starting a mirror (subscribe, read the room) may take before
/// the join or leave waiting on it gives up (`unavailable`).
const MIRROR_START: Duration = Duration::from_secs(10);

/// One room's entries on the other gateways, kept current by the room's KV
/// messages.
struct Mirror {
    /// The client's connection count when the mirror was made: a copy made
    /// before a reconnect may have missed messages while it was away.
    connects: u64,
    state: Mutex<MirrorState>,
    /// Set once the bucket has been read (after the subscription started).
    seeded: tokio::sync::OnceCell<()>,
    /// The task applying the room's KV messages; it ends with the mirror.
    updates: Mutex<Option<tokio::task::AbortHandle>>,
}

struct MirrorState {
    /// Other gateways' entries, by connection.
    others: HashMap<String, Entry>,
    /// Until the read of the bucket lands: connections whose messages
    /// arrived live, which are newer than anything that read returns.
    touched: Option<HashSet<String>>,
    last_used: Instant,
}

impl Mirror {
    fn new(connects: u64) -> Self {
        Self {
            connects,
            state: Mutex::new(MirrorState {
                others: HashMap::new(),
                touched: Some(HashSet::new()),
                last_used: Instant::now(),
            }),
            seeded: tokio::sync::OnceCell::new(),
            updates: Mutex::new(None),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MirrorState> {
        self.state
            .lock()
            .expect("mirror lock is never poisoned: no code panics while holding it")
    }

    /// Applies one message of the room's KV subjects: a put of another
    /// gateway's entry, or a delete (empty, with a `KV-Operation` header).
    fn apply(&self, msg: &async_nats::Message, gateway: &str) {
        let Some(conn) = msg.subject.rsplit('.').next() else {
            return;
        };
        // Deletes and purges are empty messages marked in their headers.
        let removed = is_removal(msg.headers.as_ref());
        let entry = if removed {
            None
        } else {
            match serde_json::from_slice::<Entry>(&msg.payload) {
                // This gateway's own entries are answered by `mine`.
                Ok(e) if e.gateway == gateway => return,
                Ok(e) => Some(e),
                Err(_) => return,
            }
        };
        let mut s = self.state();
        if let Some(touched) = s.touched.as_mut() {
            touched.insert(conn.to_owned());
        }
        match entry {
            Some(e) => {
                s.others.insert(conn.to_owned(), e);
            }
            None => {
                s.others.remove(conn);
            }
        }
    }

    /// Takes in the bucket's entries, under whatever arrived live meanwhile.
    fn seed(&self, entries: Vec<Entry>, gateway: &str) {
        let mut s = self.state();
        let touched = s.touched.take().unwrap_or_default();
        for e in entries {
            if e.gateway != gateway && !touched.contains(&e.conn) {
                s.others.entry(e.conn.clone()).or_insert(e);
            }
        }
    }

    fn set_updates(&self, task: tokio::task::AbortHandle) {
        let mut slot = self
            .updates
            .lock()
            .expect("mirror task lock is never poisoned: no code panics while holding it");
        if let Some(old) = slot.replace(task) {
            old.abort();
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        if let Ok(slot) = self.updates.get_mut()
            && let Some(task) = slot.take()
        {
            task.abort();
        }
    }
}

fn room_prefix(tenant: &TenantId, room: &RoomName) -> String {
    subjects::presence_room_prefix(tenant, room)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Presence {
    pub fn new(bus: &Bus, refresh: Duration) -> Self {
        Self {
            bus: bus.clone(),
            gateway: Arc::from(format!("gw_{}", uuid::Uuid::now_v7().simple())),
            refresh,
            mine: Arc::default(),
            mirrors: Arc::default(),
        }
    }

    /// This gateway's id (in presence entries and its statistics).
    pub fn gateway_id(&self) -> &str {
        &self.gateway
    }

    fn lifetime_ms(&self) -> i64 {
        (self.refresh * 3).as_millis() as i64
    }

    fn mine(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Entry>>> {
        self.mine
            .lock()
            .expect("presence map lock is never poisoned: no code panics while holding it")
    }

    fn mirrors(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Mirror>>> {
        self.mirrors
            .lock()
            .expect("mirror map lock is never poisoned: no code panics while holding it")
    }

    /// Records `conn` in the room; true when it is the first live connection
    /// of its `sub` there (so `presence.joined` is due).
    pub async fn enter(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        conn: &str,
        sub: &str,
        info: serde_json::Value,
    ) -> Result<bool, BusError> {
        let first = !self.sub_elsewhere(tenant, room, conn, sub).await?;
        let key = subjects::presence_key(tenant, room, conn);
        let entry = Entry {
            sub: sub.to_owned(),
            info,
            conn: conn.to_owned(),
            gateway: self.gateway.to_string(),
            expires_at_ms: now_ms() + self.lifetime_ms(),
        };
        let value = serde_json::to_vec(&entry).expect("presence entries serialize");
        self.bus.presence_put(&key, value).await?;
        self.mine()
            .entry(room_prefix(tenant, room))
            .or_default()
            .insert(conn.to_owned(), entry);
        Ok(first)
    }

    /// Removes `conn` from the room; true when no other live connection of
    /// `sub` remains there (so `presence.left` is due).
    pub async fn exit(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        conn: &str,
        sub: &str,
    ) -> Result<bool, BusError> {
        let key = subjects::presence_key(tenant, room, conn);
        {
            let mut mine = self.mine();
            let prefix = room_prefix(tenant, room);
            if let Some(room_entries) = mine.get_mut(&prefix) {
                room_entries.remove(conn);
                if room_entries.is_empty() {
                    mine.remove(&prefix);
                }
            }
        }
        self.bus.presence_delete(&key).await?;
        Ok(!self.sub_elsewhere(tenant, room, conn, sub).await?)
    }

    /// Whether `sub` has another live connection in the room: among this
    /// gateway's own entries, or in the room's mirror of the others'.
    async fn sub_elsewhere(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        conn: &str,
        sub: &str,
    ) -> Result<bool, BusError> {
        let local = self
            .mine()
            .get(&room_prefix(tenant, room))
            .is_some_and(|entries| entries.values().any(|e| e.sub == sub && e.conn != conn));
        if local {
            return Ok(true);
        }
        let mirror = self.mirror(tenant, room).await?;
        let now = now_ms();
        Ok(mirror
            .state()
            .others
            .values()
            .any(|e| e.sub == sub && e.expires_at_ms > now))
    }

    /// The room's mirror, started (subscription, then one read of the
    /// bucket) if this gateway has none yet.
    async fn mirror(&self, tenant: &TenantId, room: &RoomName) -> Result<Arc<Mirror>, BusError> {
        let connects = self.bus.connects();
        let mirror = {
            let mut mirrors = self.mirrors();
            let slot = mirrors
                .entry(room_prefix(tenant, room))
                .or_insert_with(|| Arc::new(Mirror::new(connects)));
            if slot.connects != connects {
                // Made before the last reconnect: start afresh.
                *slot = Arc::new(Mirror::new(connects));
            }
            slot.clone()
        };
        mirror.state().last_used = Instant::now();
        mirror
            .seeded
            .get_or_try_init(|| async {
                tokio::time::timeout(MIRROR_START, self.start_mirror(&mirror, tenant, room))
                    .await
                    .unwrap_or(Err(BusError::TimedOut))
            })
            .await?;
        Ok(mirror)
    }

    async fn start_mirror(
        &self,
        mirror: &Arc<Mirror>,
        tenant: &TenantId,
        room: &RoomName,
    ) -> Result<(), BusError> {
        // The subscription goes out before the read's consumer request on the
        // same connection, so the server registers it first and no change
        // falls between the two. (In a cluster it reaches the other servers
        // a moment later; a change missed then heals with the owner's next
        // refresh, or the entry's expiry.)
        let mut messages = self.bus.presence_changes(tenant, room).await?;
        let weak: Weak<Mirror> = Arc::downgrade(mirror);
        let gateway = self.gateway.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = messages.next().await {
                let Some(mirror) = weak.upgrade() else { break };
                mirror.apply(&msg, &gateway);
            }
        });
        mirror.set_updates(task.abort_handle());
        let entries = self.entries(tenant, room).await?;
        mirror.seed(entries, &self.gateway);
        Ok(())
    }

    /// The room's live entries, on every gateway, read from the bucket.
    async fn entries(&self, tenant: &TenantId, room: &RoomName) -> Result<Vec<Entry>, BusError> {
        let now = now_ms();
        Ok(self
            .bus
            .presence_entries(tenant, room)
            .await?
            .into_iter()
            // A deleted key's last message is an empty tombstone.
            .filter_map(|v| serde_json::from_slice::<Entry>(&v).ok())
            .filter(|e| e.expires_at_ms > now)
            .collect())
    }

    /// Members grouped by `sub`, each with its number of connections: this
    /// gateway's entries and the room's mirror of the others'.
    pub async fn members(
        &self,
        tenant: &TenantId,
        room: &RoomName,
    ) -> Result<Vec<PresenceMember>, BusError> {
        let mirror = self.mirror(tenant, room).await?;
        let now = now_ms();
        let mut entries: Vec<Entry> = self
            .mine()
            .get(&room_prefix(tenant, room))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        entries.extend(
            mirror
                .state()
                .others
                .values()
                .filter(|e| e.expires_at_ms > now)
                .cloned(),
        );
        let mut by_sub: BTreeMap<String, PresenceMember> = BTreeMap::new();
        for e in entries {
            by_sub
                .entry(e.sub.clone())
                .and_modify(|m| m.conns += 1)
                .or_insert(PresenceMember {
                    sub: e.sub,
                    info: e.info,
                    conns: 1,
                });
        }
        Ok(by_sub.into_values().collect())
    }

    /// Drops the entries of dead gateways from the mirrors, and the mirrors
    /// of rooms without local members for [`MIRROR_LINGER`].
    fn sweep_mirrors(&self) {
        let now = now_ms();
        let rooms: HashSet<String> = self.mine().keys().cloned().collect();
        self.mirrors().retain(|prefix, mirror| {
            let mut s = mirror.state();
            s.others.retain(|_, e| e.expires_at_ms > now);
            rooms.contains(prefix) || s.last_used.elapsed() < MIRROR_LINGER
        });
    }

    /// Re-puts this gateway's entries every `refresh` until `shutdown`.
    pub fn spawn_refresher(&self, mut shutdown: Shutdown) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.refresh);
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = tick.tick() => {}
                }
                this.sweep_mirrors();
                let expires = now_ms() + this.lifetime_ms();
                let batch: Vec<(String, String, Entry)> = this
                    .mine()
                    .iter_mut()
                    .flat_map(|(prefix, entries)| {
                        entries.iter_mut().map(move |(conn, e)| {
                            e.expires_at_ms = expires;
                            (prefix.clone(), conn.clone(), e.clone())
                        })
                    })
                    .collect();
                // Puts go out in concurrent chunks (at tens of thousands of
                // connections, one round trip each would not fit the
                // interval), spread over half the interval: a burst of every
                // entry at once starves joins of NATS.
                let chunks = batch.len().div_ceil(REFRESH_CHUNK).max(1);
                let gap = this.refresh / 2 / chunks as u32;
                let this = &this;
                let live = &|prefix: &str, conn: &str| {
                    this.mine()
                        .get(prefix)
                        .is_some_and(|m| m.contains_key(conn))
                };
                for chunk in batch.chunks(REFRESH_CHUNK) {
                    let started = tokio::time::Instant::now();
                    let puts = chunk.iter().filter_map(|(prefix, conn, entry)| {
                        // Skip entries removed while we were refreshing.
                        if !live(prefix, conn) {
                            return None;
                        }
                        let value = serde_json::to_vec(entry).ok()?;
                        let key = format!("{prefix}{conn}");
                        Some(async move {
                            let put = this.bus.presence_put(&key, value).await;
                            // A connection that left while the put was in
                            // flight had its delete overtaken: delete again.
                            if !live(prefix, conn) {
                                let _ = this.bus.presence_delete(&key).await;
                            }
                            put
                        })
                    });
                    let failed = futures_util::future::join_all(puts)
                        .await
                        .into_iter()
                        .filter(Result::is_err)
                        .count();
                    if failed > 0 {
                        tracing::warn!(failed, "presence refresh failed for some entries");
                    }
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep_until(started + gap) => {}
                    }
                }
            }
        });
    }
}
