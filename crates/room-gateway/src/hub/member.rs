//! A member of a room on this gateway, and how events reach it: filters,
//! presence rights, the `prev` chain of what it was sent, and the events
//! held for it while it joins.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use switchboard_proto::names::EventFilter;
use tokio::sync::oneshot;

use crate::metrics::GatewayMetrics;
use crate::outbox::{Flusher, Outbox, Pushed};
use crate::protocol::{CloseCode, EventFrame, Frame, MsgId, ServerFrame};

pub type ConnId = Arc<str>;

/// What the hub holds of a connection: its id and its one way out.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    pub outbox: Arc<Outbox>,
    /// Its tenant's counters on this gateway.
    pub meter: Arc<crate::metrics::TenantMeter>,
}

impl ConnHandle {
    /// Pushes a frame; an overflow is counted and logged here, once.
    pub fn offer(&self, frame: &Frame, metrics: &GatewayMetrics) -> bool {
        self.counted(self.outbox.text(frame), 1, metrics)
    }

    /// Frames in order, for `flusher` to write with the rest of what is
    /// queued for this connection (live events).
    pub fn offer_deferred(
        &self,
        frames: &[bytes::Bytes],
        flusher: &Flusher,
        metrics: &GatewayMetrics,
    ) -> bool {
        self.counted(self.outbox.defer(frames, flusher), frames.len(), metrics)
    }

    /// Frames in order, written together (one system call) where the
    /// socket takes them.
    pub fn offer_all(&self, frames: &[bytes::Bytes], metrics: &GatewayMetrics) -> bool {
        self.counted(self.outbox.texts(frames), frames.len(), metrics)
    }

    /// A join's burst (`joined`, `state`, the replay, what was held): it
    /// may wait beyond the queue's capacity, which it is bounded by anyway.
    pub fn offer_burst(&self, frames: &[bytes::Bytes], metrics: &GatewayMetrics) -> bool {
        self.counted(self.outbox.burst(frames), frames.len(), metrics)
    }
}

impl ConnHandle {
    /// Counts what a push did: frames out (the gateway's and the
    /// tenant's), or a slow-consumer cut-off, logged once.
    fn counted(&self, pushed: Pushed, n: usize, metrics: &GatewayMetrics) -> bool {
        match pushed {
            Pushed::Accepted => {
                metrics.frames_out.inc_by(n as u64);
                self.meter
                    .frames_out
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Pushed::Overflowed => {
                slow_consumer(&self.id, metrics);
                false
            }
            Pushed::Refused => false,
        }
    }
}

fn slow_consumer(conn: &str, metrics: &GatewayMetrics) {
    metrics.slow_consumer_closes.inc();
    tracing::warn!(%conn, "slow consumer: outbound queue full, closing with 4008");
}

/// An `ack` the room sends in the place of an `echo: false` publish's own
/// event, so that it reaches the publisher in `seq` order.
pub(super) struct PendingAck {
    pub r#ref: Option<MsgId>,
    pub sent: oneshot::Sender<()>,
}

/// Something waiting for a member that has not gone live yet.
pub(super) enum Held {
    Stored {
        seq: u64,
        frame: EventFrame,
    },
    Ephemeral(Frame),
    /// `stands_in`: with `echo: false`, for an event the member's filters
    /// pass, the ack takes the event's place in its chain.
    Ack {
        seq: u64,
        frame: Frame,
        stands_in: bool,
    },
}

pub(super) enum MemberState {
    /// `joined` is not sent yet: events wait (at most the outbound queue's
    /// capacity; more cuts the connection off, 4008).
    Joining { held: VecDeque<Held> },
    /// `last`: the seq of the last stored event this member was sent (or
    /// that its ack stood in for), its `prev` chain; `None` until the chain
    /// starts. `delivered`: the highest seq it holds or was told of (the
    /// floor of its `joined` at first) — events up to it are not sent again,
    /// however late the room's task comes to them.
    Live { last: Option<u64>, delivered: u64 },
}

pub(super) struct Member {
    pub conn: ConnHandle,
    pub filters: Vec<EventFilter>,
    /// Whether the token grants `presence` here (presence.* events).
    pub presence: bool,
    pub state: MemberState,
    /// `echo: false` publishes in flight, with their event ids (a handful
    /// at most: a connection's messages are handled one at a time).
    pub acks: Vec<(String, PendingAck)>,
}

impl Member {
    pub fn joining(conn: ConnHandle, filters: Vec<EventFilter>, presence: bool) -> Self {
        Self {
            conn,
            filters,
            presence,
            state: MemberState::Joining {
                held: VecDeque::new(),
            },
            acks: Vec::new(),
        }
    }

    pub fn wants(&self, event: &str) -> bool {
        wants(&self.filters, self.presence, event)
    }

    /// Takes the pending ack of event `id`, if one waits.
    pub fn take_ack(&mut self, id: &str) -> Option<PendingAck> {
        let at = self.acks.iter().position(|(e, _)| e == id)?;
        Some(self.acks.swap_remove(at).1)
    }

    /// The publisher's ack, right where its event stands in the room's
    /// order (in the event's place with `echo: false`).
    fn ack_in_order(
        &mut self,
        ack: PendingAck,
        ev: &StoredEvent<'_>,
        out: &mut Vec<bytes::Bytes>,
        cap: usize,
        metrics: &GatewayMetrics,
    ) {
        let frame = ServerFrame::Ack {
            r#ref: ack.r#ref.as_ref(),
            room: ev.room,
            seq: Some(ev.seq),
            id: ev.id,
        }
        .encode();
        let stands_in = !ev.echo && self.wants(ev.event);
        match &self.state {
            MemberState::Joining { .. } => self.hold(
                Held::Ack {
                    seq: ev.seq,
                    frame,
                    stands_in,
                },
                cap,
                metrics,
            ),
            MemberState::Live { .. } => out.push(frame.into_wire()),
        }
        let _ = ack.sent.send(());
    }

    fn hold(&mut self, item: Held, cap: usize, metrics: &GatewayMetrics) {
        if let MemberState::Joining { held } = &mut self.state {
            if held.len() >= cap {
                if self.conn.outbox.kill(CloseCode::SlowConsumer) {
                    slow_consumer(&self.conn.id, metrics);
                }
                return;
            }
            held.push_back(item);
        }
    }
}

/// Whether a member with `filters` (empty: all) and the `presence` right
/// is sent `event`: live, held, or in a replay.
pub(super) fn wants(filters: &[EventFilter], presence: bool, event: &str) -> bool {
    if event.starts_with("presence.") && !presence {
        return false;
    }
    filters.is_empty() || filters.iter().any(|f| f.matches(event))
}

pub(super) type Members = HashMap<ConnId, Member>;

/// One stored event on its way to the room's members.
pub(super) struct StoredEvent<'a> {
    pub room: &'a str,
    pub seq: u64,
    pub id: &'a str,
    pub event: &'a str,
    pub frame: &'a EventFrame,
    /// The connection that published it (client publishes only).
    pub origin: Option<&'a str>,
    /// Whether the publisher gets its own event back (`echo`).
    pub echo: bool,
}

/// The frames of one event, by `prev`: members whose chains agree share
/// one encoding (every unfiltered member shares the first).
struct Encodings<'a> {
    base: &'a EventFrame,
    others: Vec<(u64, Frame)>,
}

impl<'a> Encodings<'a> {
    fn new(base: &'a EventFrame) -> Self {
        Self {
            base,
            others: Vec::new(),
        }
    }

    /// The frame for a member whose chain ends at `prev`, shared by every
    /// member with the same.
    fn with_prev(&mut self, prev: u64) -> &Frame {
        if prev == self.base.prev() {
            return self.base.frame();
        }
        let at = match self.others.iter().position(|(p, _)| *p == prev) {
            Some(at) => at,
            None => {
                self.others.push((prev, self.base.with_prev(prev)));
                self.others.len() - 1
            }
        };
        &self.others[at].1
    }
}

/// Hands stored events (in order: a lone one, or a backlog the room works
/// off together) to every member that wants them, each with the `prev` of
/// its own chain, and writes each member's share with one push: one
/// `send()` for one event, several frames per system call for a backlog.
/// Returns, per event, how many members it went to.
pub(super) fn deliver_stored(
    members: &mut Members,
    events: &[StoredEvent<'_>],
    cap: usize,
    metrics: &GatewayMetrics,
) -> Vec<usize> {
    let flusher = Flusher::current();
    let mut encodings: Vec<Encodings<'_>> =
        events.iter().map(|e| Encodings::new(e.frame)).collect();
    let mut sent = vec![0; events.len()];
    // One member's frames of this delivery, reused for every member.
    let mut out: Vec<bytes::Bytes> = Vec::with_capacity(events.len());
    for m in members.values_mut() {
        out.clear();
        for ((ev, enc), n) in events.iter().zip(encodings.iter_mut()).zip(sent.iter_mut()) {
            let own = ev.origin.is_some_and(|c| *c == *m.conn.id);
            if own && let Some(ack) = m.take_ack(ev.id) {
                m.ack_in_order(ack, ev, &mut out, cap, metrics);
            }
            let wanted = m.wants(ev.event);
            if own && !ev.echo {
                // Not sent back; acked (by the room, or by the session after
                // a wait), the ack stands in for it.
                if let MemberState::Live { last, delivered } = &mut m.state {
                    if wanted && ev.seq > *delivered {
                        *last = Some(ev.seq);
                    }
                    *delivered = (*delivered).max(ev.seq);
                }
                continue;
            }
            if !wanted {
                continue;
            }
            match &mut m.state {
                MemberState::Joining { .. } => m.hold(
                    Held::Stored {
                        seq: ev.seq,
                        frame: ev.frame.clone(),
                    },
                    cap,
                    metrics,
                ),
                MemberState::Live { last, delivered } => {
                    if ev.seq <= *delivered {
                        continue; // in its replay, or before its floor
                    }
                    let frame = enc.with_prev(last.unwrap_or(ev.frame.prev()));
                    *last = Some(ev.seq);
                    *delivered = ev.seq;
                    out.push(frame.wire().clone());
                    *n += 1;
                }
            }
        }
        if !out.is_empty() {
            m.conn.offer_deferred(&out, &flusher, metrics);
        }
    }
    sent
}

/// Hands an ephemeral event to every member that wants it.
pub(super) fn deliver_ephemeral(
    members: &mut Members,
    event: &str,
    frame: &Frame,
    no_echo_from: Option<&str>,
    cap: usize,
    metrics: &GatewayMetrics,
) {
    for m in members.values_mut() {
        if no_echo_from.is_some_and(|c| *c == *m.conn.id) || !m.wants(event) {
            continue;
        }
        match &m.state {
            MemberState::Joining { .. } => m.hold(Held::Ephemeral(frame.clone()), cap, metrics),
            MemberState::Live { .. } => {
                m.conn.offer(frame, metrics);
            }
        }
    }
}

/// Releases what was held for a member that goes live now, after the
/// frames its join sends first: stored events newer than `floor` (the
/// `seq` its `joined` reported), chained from `last`.
pub(super) fn release(
    m: &mut Member,
    first: Vec<bytes::Bytes>,
    floor: u64,
    mut last: Option<u64>,
    metrics: &GatewayMetrics,
) {
    let held = match std::mem::replace(
        &mut m.state,
        MemberState::Live {
            last: None,
            delivered: floor,
        },
    ) {
        MemberState::Joining { held } => held,
        MemberState::Live { .. } => VecDeque::new(),
    };
    let mut delivered = floor;
    let mut out = first;
    for h in held {
        match h {
            Held::Stored { seq, frame } if seq > delivered => {
                out.push(frame.with_prev(last.unwrap_or(frame.prev())).into_wire());
                last = Some(seq);
                delivered = seq;
            }
            Held::Stored { .. } => {}
            Held::Ephemeral(f) => out.push(f.into_wire()),
            Held::Ack {
                seq,
                frame,
                stands_in,
            } => {
                out.push(frame.into_wire());
                if stands_in && seq > delivered {
                    last = Some(seq);
                    delivered = seq;
                }
            }
        }
    }
    m.state = MemberState::Live { last, delivered };
    m.conn.offer_burst(&out, metrics);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EventFrame;
    use switchboard_proto::pb;

    /// A connection whose client never reads, on a real loopback socket.
    async fn conn(cap: usize) -> (ConnHandle, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let outbox = Arc::new(Outbox::new(Arc::new(server), cap));
        (
            ConnHandle {
                id: Arc::from("c_1"),
                outbox,
                meter: Default::default(),
            },
            client,
        )
    }

    #[tokio::test]
    async fn events_held_for_a_joining_member_are_bounded_like_its_queue() {
        let (c, _client) = conn(3).await;
        let metrics = GatewayMetrics::default();
        let mut members = Members::new();
        members.insert(c.id.clone(), Member::joining(c.clone(), Vec::new(), false));
        let ev = pb::RoomEvent {
            event: "a.b".into(),
            ..Default::default()
        };
        for seq in 1..=4 {
            let frame = EventFrame::encode(&ev, Some((seq, seq - 1)));
            deliver_stored(
                &mut members,
                &[StoredEvent {
                    room: "r",
                    seq,
                    id: "e",
                    event: "a.b",
                    frame: &frame,
                    origin: None,
                    echo: true,
                }],
                3,
                &metrics,
            );
            let held = match &members[&c.id].state {
                MemberState::Joining { held } => held.len(),
                MemberState::Live { .. } => unreachable!(),
            };
            assert_eq!(held, (seq as usize).min(3));
        }
        assert_eq!(c.outbox.killed(), Some(CloseCode::SlowConsumer.code()));
        assert_eq!(metrics.slow_consumer_closes.get(), 1);
    }

    #[tokio::test]
    async fn a_live_member_is_never_sent_an_event_at_or_below_what_it_holds() {
        let (c, _client) = conn(16).await;
        let metrics = GatewayMetrics::default();
        let mut members = Members::new();
        members.insert(c.id.clone(), Member::joining(c.clone(), Vec::new(), false));
        // Joined with the room at seq 10 (replayed up to it): live from here.
        release(
            members.get_mut(&c.id).unwrap(),
            Vec::new(),
            10,
            Some(10),
            &metrics,
        );
        let ev = pb::RoomEvent {
            event: "a.b".into(),
            ..Default::default()
        };
        let sent_for = |members: &mut Members, seq: u64, prev: u64| {
            let frame = EventFrame::encode(&ev, Some((seq, prev)));
            deliver_stored(
                members,
                &[StoredEvent {
                    room: "r",
                    seq,
                    id: "e",
                    event: "a.b",
                    frame: &frame,
                    origin: None,
                    echo: true,
                }],
                16,
                &metrics,
            )[0]
        };
        // The room's task comes late to events the replay already gave.
        assert_eq!(sent_for(&mut members, 9, 8), 0);
        assert_eq!(sent_for(&mut members, 10, 9), 0);
        assert_eq!(sent_for(&mut members, 11, 10), 1);
        assert_eq!(sent_for(&mut members, 11, 10), 0, "never twice");
    }
}
