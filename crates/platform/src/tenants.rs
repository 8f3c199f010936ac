//! The tenants a service knows: KV `SB_TENANTS`, watched and cached, never
//! read from PostgreSQL. Gateways verify browser tokens with it (their
//! `/readyz` waits until the first load is done); ingest reads each tenant's
//! limits from it, so a `PATCH` of the limits reaches every instance within
//! moments, with no restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use switchboard_proto::TenantId;
use switchboard_proto::tenant::TenantConfig;

use crate::Shutdown;

#[derive(Clone, Default)]
pub struct TenantDirectory {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    tenants: RwLock<HashMap<TenantId, Arc<TenantConfig>>>,
    loaded: AtomicBool,
    /// The bucket, once `start` ran: read directly for a tenant the watch
    /// has not delivered yet.
    store: std::sync::OnceLock<kv::Store>,
}

impl TenantDirectory {
    pub fn get(&self, id: &TenantId) -> Option<Arc<TenantConfig>> {
        self.inner
            .tenants
            .read()
            .expect("tenant map lock is never poisoned: writers do not panic")
            .get(id)
            .cloned()
    }

    /// As [`get`](Self::get), but a tenant the watch has not delivered yet
    /// (created a moment ago) is read from the bucket directly, so a client
    /// that connects right after its tenant was created is not refused.
    pub async fn get_or_fetch(&self, id: &TenantId) -> Option<Arc<TenantConfig>> {
        if let Some(t) = self.get(id) {
            return Some(t);
        }
        let store = self.inner.store.get()?;
        let value = match store.get(id.as_str()).await {
            Ok(v) => v?,
            Err(e) => {
                tracing::warn!(tenant = %id, error = %e, "reading a tenant from SB_TENANTS failed");
                return None;
            }
        };
        let cfg: TenantConfig = serde_json::from_slice(&value).ok()?;
        let cfg = Arc::new(cfg);
        self.inner
            .tenants
            .write()
            .expect("tenant map lock is never poisoned: writers do not panic")
            .entry(id.clone())
            .or_insert_with(|| cfg.clone());
        Some(cfg)
    }

    pub fn is_loaded(&self) -> bool {
        self.inner.loaded.load(Ordering::Acquire)
    }

    fn apply(&self, entry: kv::Entry) {
        let Ok(id) = TenantId::parse(entry.key.clone()) else {
            tracing::warn!(key = %entry.key, "ignoring SB_TENANTS entry with a bad key");
            return;
        };
        let mut map = self
            .inner
            .tenants
            .write()
            .expect("tenant map lock is never poisoned: writers do not panic");
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<TenantConfig>(&entry.value) {
                Ok(cfg) => {
                    map.insert(id, Arc::new(cfg));
                }
                Err(e) => tracing::warn!(tenant = %id, error = %e, "ignoring bad tenant config"),
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                map.remove(&id);
            }
        }
    }

    /// Loads every tenant, then follows changes until `shutdown`. Returns
    /// once the first load is complete; the watch goes on in the
    /// background. When the watch ends (the bucket went away, NATS lost
    /// it) the directory says it is not loaded — `/readyz` turns red — and
    /// watches again until it is back, keeping what it knew meanwhile.
    pub async fn start(&self, store: kv::Store, shutdown: Shutdown) -> Result<(), kv::WatchError> {
        let _ = self.inner.store.set(store.clone());
        let watch = store.watch_with_history(">").await?;
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
        let dir = self.clone();
        tokio::spawn(async move {
            let mut shutdown = shutdown;
            let mut first = Some(first_tx);
            let mut watch = Some(watch);
            let mut retry = Duration::from_millis(100);
            loop {
                let current = match watch.take() {
                    Some(w) => w,
                    None => match store.watch_with_history(">").await {
                        Ok(w) => {
                            retry = Duration::from_millis(100);
                            w
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot watch SB_TENANTS; retrying");
                            tokio::select! {
                                _ = shutdown.wait() => return,
                                _ = tokio::time::sleep(retry) => {}
                            }
                            retry = (retry * 2).min(Duration::from_secs(2));
                            continue;
                        }
                    },
                };
                let followed = tokio::time::Instant::now();
                let ended = dir.follow(&store, current, &mut first, &mut shutdown).await;
                if !ended {
                    return; // shutdown
                }
                dir.inner.loaded.store(false, Ordering::Release);
                tracing::error!("SB_TENANTS watch ended; not ready until it is back");
                if followed.elapsed() < Duration::from_secs(1) {
                    // It ended at once: wait before watching again.
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(Duration::from_secs(2));
                }
            }
        });
        let _ = first_rx.await;
        Ok(())
    }

    /// Applies one watch until it ends (true) or `shutdown` (false); the
    /// directory counts as loaded once the watch has caught up.
    async fn follow(
        &self,
        store: &kv::Store,
        mut watch: kv::Watch,
        first: &mut Option<tokio::sync::oneshot::Sender<()>>,
        shutdown: &mut Shutdown,
    ) -> bool {
        let caught_up = |dir: &Self, first: &mut Option<tokio::sync::oneshot::Sender<()>>| {
            dir.inner.loaded.store(true, Ordering::Release);
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
        };
        // An empty bucket delivers nothing to catch up with.
        if store.status().await.map(|s| s.values()).unwrap_or(0) == 0 {
            caught_up(self, first);
        }
        loop {
            tokio::select! {
                _ = shutdown.wait() => return false,
                next = watch.next() => match next {
                    Some(Ok(entry)) => {
                        let done = entry.delta == 0;
                        self.apply(entry);
                        if done && !self.is_loaded() {
                            caught_up(self, first);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "SB_TENANTS watch error");
                        return true;
                    }
                    None => return true,
                }
            }
        }
    }
}
