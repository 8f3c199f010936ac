//! Ids derived from idempotency keys: the same parts always give the same
//! event id, which is the `Nats-Msg-Id`, so JetStream stores a retried or
//! concurrent duplicate once and answers it with the first one's sequence.

use sha2::{Digest, Sha256};

pub fn derived_event_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut id = String::with_capacity(36);
    id.push_str("evt_");
    for b in &digest[..16] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

#[cfg(test)]
mod tests {
    #[test]
    fn parts_are_length_prefixed() {
        use super::derived_event_id as id;
        assert_eq!(id(&["a", "b"]), id(&["a", "b"]));
        assert_ne!(id(&["ab", ""]), id(&["a", "b"]));
        assert_eq!(id(&["x"]).len(), 36);
    }
}
