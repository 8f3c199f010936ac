//! Which tenant an API key belongs to, remembered so that the hot path
//! (publishing events) does not ask PostgreSQL on every request.
//!
//! A revoke evicts the key here at once and tells every other ingest
//! instance over core NATS (`sb.ctl.apikey.revoked`, the key's hash), so a
//! revoked key is refused from the next request on. An instance that missed
//! the message (disconnected at that moment) forgets the key within
//! [`KEY_TTL`] anyway. Unknown keys are remembered only briefly, so a key
//! created on another instance works almost at once while guessing keys
//! still cannot hammer the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use switchboard_platform::Shutdown;
use switchboard_proto::subjects;

/// How long a known key is trusted without asking PostgreSQL again.
pub const KEY_TTL: Duration = Duration::from_secs(30);
/// How long an unknown key is refused without asking again.
const UNKNOWN_TTL: Duration = Duration::from_secs(1);
/// Bound on remembered keys; past it, the cache starts over.
const MAX_KEYS: usize = 100_000;

/// Key hash → (owning tenant, or none; when it was looked up).
type Keys = HashMap<Vec<u8>, (Option<String>, Instant)>;

#[derive(Clone, Default)]
pub struct KeyCache {
    keys: Arc<Mutex<Keys>>,
}

impl KeyCache {
    fn keys(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys
            .lock()
            .expect("key cache lock is never poisoned: no code panics while holding it")
    }

    /// `Some(owner)` when the answer is fresh (`owner` None: no such key).
    pub fn get(&self, hash: &[u8]) -> Option<Option<String>> {
        let keys = self.keys();
        let (owner, at) = keys.get(hash)?;
        let ttl = if owner.is_some() {
            KEY_TTL
        } else {
            UNKNOWN_TTL
        };
        (at.elapsed() < ttl).then(|| owner.clone())
    }

    pub fn put(&self, hash: &[u8], owner: Option<String>) {
        let mut keys = self.keys();
        if keys.len() >= MAX_KEYS {
            keys.clear();
        }
        keys.insert(hash.to_vec(), (owner, Instant::now()));
    }

    pub fn evict(&self, hash: &[u8]) {
        self.keys().remove(hash);
    }

    /// Evicts here and tells the other instances.
    pub async fn revoked(&self, client: &async_nats::Client, hash: &[u8]) {
        self.evict(hash);
        if let Err(e) = client
            .publish(subjects::API_KEY_REVOKED, hash.to_vec().into())
            .await
        {
            tracing::warn!(error = %e, "revocation not broadcast; other instances forget the key within the TTL");
        }
    }

    /// Follows revocations made by other instances until `shutdown`.
    pub async fn follow(
        &self,
        client: &async_nats::Client,
        mut shutdown: Shutdown,
    ) -> Result<(), async_nats::SubscribeError> {
        let mut sub = client.subscribe(subjects::API_KEY_REVOKED).await?;
        let cache = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    msg = sub.next() => match msg {
                        Some(m) => cache.evict(&m.payload),
                        None => break,
                    },
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_are_kept_unknown_ones_briefly_and_evictions_are_immediate() {
        let c = KeyCache::default();
        assert_eq!(c.get(b"k"), None);
        c.put(b"k", Some("acme".into()));
        assert_eq!(c.get(b"k"), Some(Some("acme".into())));
        c.evict(b"k");
        assert_eq!(c.get(b"k"), None);
        c.put(b"x", None);
        assert_eq!(c.get(b"x"), Some(None));
    }
}
