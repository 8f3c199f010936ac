//! Presence: who is in a room, across every gateway. Each connection in a
//! room has an entry in KV `SB_PRESENCE` (`{tenant}.{room}.{conn}`), which
//! its gateway refreshes; an entry whose `expires_at_ms` has passed counts
//! as gone, so a dead gateway's members vanish within three refresh
//! intervals even before the bucket's TTL removes them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{consumer, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use switchboard_platform::Shutdown;
use switchboard_proto::{RoomName, TenantId, subjects};

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
    kv: kv::Store,
    /// This gateway instance's id, in its entries.
    gateway: Arc<str>,
    refresh: Duration,
    /// This gateway's entries by room key prefix (`{tenant}.{room}.`), then
    /// by connection; re-put every `refresh`.
    mine: Arc<Mutex<HashMap<String, HashMap<String, Entry>>>>,
    /// Recent reads of a room's entries, shared by the joins and leaves of
    /// that room for [`SNAPSHOT_TTL`]: a reconnect storm reads each room
    /// once, not once per client.
    snapshots: Arc<Mutex<HashMap<String, Snapshot>>>,
}

/// Presence puts in flight at once while refreshing.
const REFRESH_CHUNK: usize = 64;

/// How long a read of a room's entries answers "is this sub already here".
const SNAPSHOT_TTL: Duration = Duration::from_secs(1);

type Snapshot = (tokio::time::Instant, Arc<tokio::sync::OnceCell<Vec<Entry>>>);

/// One member as the `presence` frame lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub sub: String,
    pub info: serde_json::Value,
    pub conns: usize,
}

fn room_prefix(tenant: &TenantId, room: &RoomName) -> String {
    format!("{tenant}.{room}.")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Presence {
    pub fn new(kv: kv::Store, refresh: Duration) -> Self {
        Self {
            kv,
            gateway: Arc::from(format!("gw_{}", uuid::Uuid::now_v7().simple())),
            refresh,
            mine: Arc::default(),
            snapshots: Arc::default(),
        }
    }

    fn lifetime_ms(&self) -> i64 {
        (self.refresh * 3).as_millis() as i64
    }

    fn mine(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Entry>>> {
        self.mine
            .lock()
            .expect("presence map lock is never poisoned: no code panics while holding it")
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
    ) -> Result<bool, async_nats::Error> {
        let first = !self.sub_elsewhere(tenant, room, conn, sub).await?;
        let key = subjects::presence_key(tenant, room, conn);
        let entry = Entry {
            sub: sub.to_owned(),
            info,
            conn: conn.to_owned(),
            gateway: self.gateway.to_string(),
            expires_at_ms: now_ms() + self.lifetime_ms(),
        };
        self.kv
            .put(&key, serde_json::to_vec(&entry)?.into())
            .await?;
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
    ) -> Result<bool, async_nats::Error> {
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
        self.kv.delete(&key).await?;
        Ok(!self.sub_elsewhere(tenant, room, conn, sub).await?)
    }

    /// Whether `sub` has another live connection in the room: first among
    /// this gateway's own entries, then in a recent snapshot of all of them.
    async fn sub_elsewhere(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        conn: &str,
        sub: &str,
    ) -> Result<bool, async_nats::Error> {
        let prefix = room_prefix(tenant, room);
        let now = now_ms();
        let local = self
            .mine()
            .get(&prefix)
            .is_some_and(|entries| entries.values().any(|e| e.sub == sub && e.conn != conn));
        if local {
            return Ok(true);
        }
        let cell = {
            let mut snaps = self
                .snapshots
                .lock()
                .expect("snapshot lock is never poisoned: no code panics while holding it");
            snaps.retain(|_, (at, _)| at.elapsed() < SNAPSHOT_TTL);
            snaps
                .entry(prefix.clone())
                .or_insert_with(|| (tokio::time::Instant::now(), Arc::default()))
                .1
                .clone()
        };
        let entries = cell.get_or_try_init(|| self.entries(tenant, room)).await?;
        // This gateway's own entries are answered by `mine` above; the
        // snapshot speaks for the other gateways.
        Ok(entries
            .iter()
            .any(|e| e.sub == sub && *e.gateway != *self.gateway && e.expires_at_ms > now))
    }

    /// The room's live entries, on every gateway: the last value of each of
    /// the room's keys, from one short-lived ordered consumer. A room of
    /// hundreds of members costs a few requests, not a `get` per member.
    pub async fn entries(
        &self,
        tenant: &TenantId,
        room: &RoomName,
    ) -> Result<Vec<Entry>, async_nats::Error> {
        let stream = &self.kv.stream;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("$KV.{}.{tenant}.{room}.*", subjects::PRESENCE_BUCKET),
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await?;
        let name = consumer.cached_info().name.clone();
        let keys = consumer.cached_info().num_pending;
        let read = async {
            let now = now_ms();
            let mut out = Vec::new();
            if keys == 0 {
                return Ok::<_, async_nats::Error>(out);
            }
            let mut messages = consumer.messages().await?;
            while let Some(msg) = messages.next().await {
                let msg = msg?;
                let left = msg.info()?.pending;
                // A deleted key's last message is an empty tombstone.
                if let Ok(e) = serde_json::from_slice::<Entry>(&msg.payload)
                    && e.expires_at_ms > now
                {
                    out.push(e);
                }
                if left == 0 {
                    break;
                }
            }
            Ok(out)
        };
        let result = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .unwrap_or_else(|_| Err("reading the room's presence entries timed out".into()));
        // Ordered consumers linger for their inactivity threshold; ours goes now.
        let _ = stream.delete_consumer(&name).await;
        result
    }

    /// Members grouped by `sub`, each with its number of connections.
    pub async fn members(
        &self,
        tenant: &TenantId,
        room: &RoomName,
    ) -> Result<Vec<Member>, async_nats::Error> {
        let mut by_sub: BTreeMap<String, Member> = BTreeMap::new();
        for e in self.entries(tenant, room).await? {
            by_sub
                .entry(e.sub.clone())
                .and_modify(|m| m.conns += 1)
                .or_insert(Member {
                    sub: e.sub,
                    info: e.info,
                    conns: 1,
                });
        }
        Ok(by_sub.into_values().collect())
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
                for chunk in batch.chunks(REFRESH_CHUNK) {
                    let started = tokio::time::Instant::now();
                    let puts = chunk.iter().filter_map(|(prefix, conn, entry)| {
                        // Skip entries removed while we were refreshing.
                        let live = this
                            .mine()
                            .get(prefix)
                            .is_some_and(|m| m.contains_key(conn));
                        let value = serde_json::to_vec(entry).ok()?;
                        live.then(|| this.kv.put(format!("{prefix}{conn}"), value.into()))
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
