//! Recent events of a room, kept by the gateway so that replays on `join`
//! with `since` and gap healing rarely need JetStream: a reconnect storm of
//! one room costs one fetch, not one consumer per client.
//!
//! Entries are keyed by `seq` and remember their `prev`, so a range is known
//! complete only when the `prev` links run unbroken from its end back to its
//! start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use prost::Message as _;
use switchboard_proto::{RoomName, TenantId, pb, subjects};

use crate::frames::{Frame, event_frame};

#[derive(Clone)]
pub struct Entry {
    pub seq: u64,
    pub prev: u64,
    pub event: Arc<str>,
    pub frame: Frame,
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
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("JetStream request failed")]
    JetStream(#[from] async_nats::Error),
    #[error("JetStream did not deliver the range in time")]
    TimedOut,
}

/// What [`read_ordered`] does after a message.
pub enum Read {
    More,
    Done,
}

/// Reads `stream` through one short-lived ordered consumer with `config`,
/// handing each message (with its stream sequence) to `take` until it says
/// [`Read::Done`] or nothing more is pending, within 10 s; the consumer is
/// deleted afterwards.
pub async fn read_ordered<I>(
    stream: &jetstream::stream::Stream<I>,
    config: consumer::pull::OrderedConfig,
    mut take: impl FnMut(u64, &jetstream::Message) -> Read,
) -> Result<(), FetchError> {
    let consumer = stream
        .create_consumer(config)
        .await
        .map_err(|e| FetchError::JetStream(e.into()))?;
    let name = consumer.cached_info().name.clone();
    let empty = consumer.cached_info().num_pending == 0;
    let read = async {
        if empty {
            return Ok(());
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| FetchError::JetStream(e.into()))?;
        while let Some(msg) = messages.next().await {
            let msg = msg.map_err(|e| FetchError::JetStream(e.into()))?;
            let info = msg.info().map_err(FetchError::JetStream)?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            if matches!(take(seq, &msg), Read::Done) || pending == 0 {
                break;
            }
        }
        Ok::<_, FetchError>(())
    };
    let result = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or(Err(FetchError::TimedOut));
    // Ordered consumers linger for their inactivity threshold; delete ours
    // now so the number alive stays the number of reads in flight.
    let _ = stream.delete_consumer(&name).await;
    result
}

/// Stored events of the room with `from <= seq <= until`, oldest first.
pub async fn fetch_range(
    js: &jetstream::Context,
    tenant: &TenantId,
    room: &RoomName,
    from: u64,
    until: u64,
) -> Result<Vec<(u64, pb::RoomEvent)>, FetchError> {
    if until < from {
        return Ok(Vec::new());
    }
    let stream = js
        .get_stream_no_info(subjects::ROOMS_STREAM)
        .await
        .map_err(|e| FetchError::JetStream(e.into()))?;
    let config = consumer::pull::OrderedConfig {
        filter_subject: subjects::room_event(tenant, room),
        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
            start_sequence: from.max(1),
        },
        ..Default::default()
    };
    let mut out = Vec::new();
    read_ordered(&stream, config, |seq, msg| {
        if seq > until {
            return Read::Done;
        }
        if let Ok(ev) = pb::RoomEvent::decode(msg.payload.clone()) {
            out.push((seq, ev));
        }
        if seq >= until { Read::Done } else { Read::More }
    })
    .await?;
    Ok(out)
}

/// The room's latest stored seq (0 when it has none).
pub async fn last_seq(
    js: &jetstream::Context,
    tenant: &TenantId,
    room: &RoomName,
) -> Result<u64, async_nats::Error> {
    use async_nats::jetstream::stream::DirectGetErrorKind;
    let stream = js.get_stream_no_info(subjects::ROOMS_STREAM).await?;
    // A direct get (the stream allows them) is answered by the stream
    // itself, not queued behind the JetStream API: it is on every join.
    match stream
        .direct_get_last_for_subject(subjects::room_event(tenant, room))
        .await
    {
        Ok(m) => Ok(m.sequence),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Turns fetched events into history entries chained from `prev`.
pub fn chain_entries(prev: u64, events: Vec<(u64, pb::RoomEvent)>) -> Vec<Entry> {
    let mut prev = prev;
    events
        .into_iter()
        .map(|(seq, ev)| {
            let e = Entry {
                seq,
                prev,
                event: Arc::from(ev.event.as_str()),
                frame: event_frame(&ev, Some((seq, prev))),
            };
            prev = seq;
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64, prev: u64) -> Entry {
        Entry {
            seq,
            prev,
            event: Arc::from("a"),
            frame: Frame::new(),
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
