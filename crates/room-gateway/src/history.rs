//! Recent events of a room, kept by the gateway so that replays on `join`
//! with `since` rarely need JetStream: a reconnect storm of one room costs
//! one fetch, not one consumer per client.
//!
//! Entries are keyed by `seq` and remember their `prev`, so a range is known
//! complete only when the `prev` links run unbroken from its end back to its
//! start.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::protocol::EventFrame;

#[derive(Clone)]
pub struct Entry {
    pub seq: u64,
    pub prev: u64,
    pub event: Arc<str>,
    pub frame: EventFrame,
    /// When the stream stored it (Unix ms; the publisher's clock for live
    /// events): the age rule of the recovery window.
    pub stored_ms: i64,
}

pub struct History {
    entries: BTreeMap<u64, Entry>,
    cap: usize,
}

impl History {
    pub fn new(cap: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            cap,
        }
    }

    pub fn insert(&mut self, entry: Entry) {
        if self.cap == 0 {
            return;
        }
        self.entries.insert(entry.seq, entry);
        while self.entries.len() > self.cap {
            self.entries.pop_first();
        }
    }

    /// The events after `since` up to and including `until`, oldest first,
    /// if this history holds every one of them.
    pub fn chain(&self, since: u64, until: u64) -> Option<Vec<Entry>> {
        if until <= since {
            return Some(Vec::new());
        }
        let mut out = Vec::new();
        let mut at = until;
        while at > since {
            let e = self.entries.get(&at)?;
            out.push(e.clone());
            at = e.prev;
        }
        // Walking back must land exactly on `since`, or `since` was not an
        // event of this room's chain.
        if at != since {
            return None;
        }
        out.reverse();
        Some(out)
    }

    /// When `seq` was stored, if this history holds it.
    pub fn stored_ms(&self, seq: u64) -> Option<i64> {
        self.entries.get(&seq).map(|e| e.stored_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::pb;

    fn e(seq: u64, prev: u64) -> Entry {
        Entry {
            seq,
            prev,
            event: Arc::from("a"),
            frame: EventFrame::encode(&pb::RoomEvent::default(), Some((seq, prev))),
            stored_ms: 0,
        }
    }

    #[test]
    fn chain_needs_unbroken_prev_links() {
        let mut h = History::new(10);
        for (s, p) in [(3, 0), (7, 3), (9, 7), (15, 9)] {
            h.insert(e(s, p));
        }
        let seqs = |v: Option<Vec<Entry>>| v.map(|v| v.iter().map(|e| e.seq).collect::<Vec<_>>());
        assert_eq!(seqs(h.chain(3, 15)), Some(vec![7, 9, 15]));
        assert_eq!(seqs(h.chain(0, 9)), Some(vec![3, 7, 9]));
        assert_eq!(seqs(h.chain(15, 15)), Some(vec![]));
        assert_eq!(seqs(h.chain(4, 15)), None, "4 is not in the chain");
        assert_eq!(seqs(h.chain(3, 16)), None, "16 is unknown");
        h.insert(e(20, 17));
        assert_eq!(seqs(h.chain(15, 20)), None, "a gap between 15 and 17");
    }

    #[test]
    fn history_keeps_the_newest() {
        let mut h = History::new(2);
        for (s, p) in [(1, 0), (2, 1), (3, 2)] {
            h.insert(e(s, p));
        }
        assert!(h.chain(1, 3).is_some());
        assert!(h.chain(0, 3).is_none());
    }
}
