//! Which tenant an API key belongs to, remembered so that the hot path
//! (publishing events) does not ask on every request. ingest owns the keys
//! (PostgreSQL) and answers other services' questions on
//! `subjects::API_KEY_OWNER` ([`ask_owner`]); every service keeps a cache.
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
use sha2::{Digest, Sha256};
use switchboard_proto::subjects;

use crate::Shutdown;

/// How long another service waits for ingest to say who owns a key.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// An API key's hash, as it is stored and asked about (only hashes are
/// kept anywhere).
pub fn hash_key(api_key: &str) -> Vec<u8> {
    Sha256::digest(api_key.as_bytes()).to_vec()
}

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("nobody answered who owns an API key (is ingest running?)")]
    Request(#[source] async_nats::RequestError),
    #[error("the answer about an API key is not a tenant id")]
    Answer,
}

/// Asks ingest (over NATS) which tenant owns the key with `hash`.
pub async fn ask_owner(
    client: &async_nats::Client,
    hash: &[u8],
) -> Result<Option<String>, AskError> {
    let reply = tokio::time::timeout(
        ASK_TIMEOUT,
        client.request(subjects::API_KEY_OWNER, hash.to_vec().into()),
    )
    .await
    .map_err(|_| {
        AskError::Request(async_nats::RequestError::with_source(
            async_nats::RequestErrorKind::TimedOut,
            "no answer in time",
        ))
    })?
    .map_err(AskError::Request)?;
    if reply.payload.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(&reply.payload)
        .map(|t| Some(t.to_owned()))
        .map_err(|_| AskError::Answer)
}

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
