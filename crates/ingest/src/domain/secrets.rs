//! Secrets and ids. API keys are shown once and stored as SHA-256 hashes: they
//! carry 256 random bits, so a fast hash is enough (no password stretching).

use sha2::{Digest, Sha256};

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex(&buf)
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// `sk_` and 64 hex digits.
pub fn new_api_key() -> String {
    format!("sk_{}", random_hex(32))
}

/// `ss_` and 64 hex digits; the HMAC key is these UTF-8 bytes as shown.
pub fn new_signing_secret() -> String {
    format!("ss_{}", random_hex(32))
}

pub fn new_tenant_id() -> String {
    format!("t{}", random_hex(8))
}

pub fn new_key_id() -> String {
    format!("key_{}", uuid::Uuid::now_v7().simple())
}

pub use switchboard_platform::apikeys::hash_key;

/// A fresh event id: time-ordered, so ids sort roughly by acceptance.
pub fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}

/// The id of an event published under an idempotency key: the same key (and
/// position in a batch) always gives the same id, so JetStream's
/// deduplication stores a retried or concurrent duplicate once.
pub fn idempotent_event_id(tenant: &str, scope: &str, key: &str, index: usize) -> String {
    let mut h = Sha256::new();
    for part in [tenant, scope, key, &index.to_string()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    format!("evt_{}", &hex(&h.finalize())[..32])
}

/// Hash of a request body, to tell a true retry from a reused key.
pub fn request_hash(body: &[u8]) -> Vec<u8> {
    Sha256::digest(body).to_vec()
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_ids_are_stable_and_distinct() {
        let a = idempotent_event_id("t", "room:r", "k", 0);
        assert_eq!(a, idempotent_event_id("t", "room:r", "k", 0));
        assert_ne!(a, idempotent_event_id("t", "room:r", "k", 1));
        assert_ne!(a, idempotent_event_id("t", "room:s", "k", 0));
        assert!(switchboard_proto::TenantId::parse(new_tenant_id()).is_ok());
    }
}
