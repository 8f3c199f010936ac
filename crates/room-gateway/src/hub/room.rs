//! One room's task: the room's sequence is its own. It subscribes the
//! room's live and ephemeral subjects, then for each stored event checks the
//! `prev` chain: a gap (an event lost on core NATS) is filled from JetStream
//! before anything later is delivered, retrying with backoff while later
//! events wait; when the stream cannot fill it, every member is told to
//! `reconnect` (they resume with `since`) — never a silent gap. After the
//! live connection may have lost messages (a slow-consumer drop or a
//! reconnect) the room checks, once quiet, whether the stream holds events
//! newer than the last it delivered: a lost tail no later `prev` reveals.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt};
use prost::Message as _;
use switchboard_proto::{pb, subjects};
use tokio::sync::watch;
use tokio::time::Instant;

use super::member::{StoredEvent, deliver_ephemeral, deliver_stored};
use super::{Room, RoomHub};
use crate::bus::{Bus, BusError, Stored, header_u64};
use crate::history::Entry;
use crate::metrics::{GatewayMetrics, HopSample};
use crate::outbox::Flusher;
use crate::protocol::{CloseCode, EventFrame, ServerFrame};
use switchboard_platform::telemetry;

/// How long a room must be quiet after a possible loss before it checks
/// for a lost tail.
const TAIL_CHECK_AFTER: Duration = Duration::from_millis(100);
/// How long a heal keeps retrying before the members are asked to
/// reconnect; the first retry comes after `HEAL_RETRY`, doubling up to 1 s.
const HEAL_FOR: Duration = Duration::from_secs(5);
const HEAL_RETRY: Duration = Duration::from_millis(50);
/// Live events worked off together at most (a backlog's batch).
const LIVE_BATCH: usize = 64;
/// How long a room already behind waits for its batch to grow.
const COALESCE: Duration = Duration::from_millis(2);
/// The event ingest announces a new room state with (KV `SB_ROOM_STATE`
/// holds it).
const STATE_UPDATED: &str = "state.updated";
/// The `after_ms` window of a `reconnect` sent when a gap cannot be healed.
const RESYNC_JITTER_MS: u64 = 1_000;

pub(super) fn spawn_room(
    hub: RoomHub,
    room: Arc<Room>,
    ready: watch::Sender<Option<bool>>,
) -> tokio::task::AbortHandle {
    tokio::spawn(run(RoomTask { hub, room }, ready)).abort_handle()
}

struct RoomTask {
    hub: RoomHub,
    room: Arc<Room>,
}

impl RoomTask {
    fn bus(&self) -> &Bus {
        &self.hub.inner.bus
    }

    fn metrics(&self) -> &GatewayMetrics {
        &self.hub.inner.metrics
    }

    /// Delivers stored events (in order) to the members — each member's
    /// share in one push — and keeps them for replays. Hop samples and
    /// traced events among them are finished once the flusher has written
    /// what was queued.
    fn deliver(&self, batch: &mut Vec<Ready>) {
        if batch.is_empty() {
            return;
        }
        let sent = {
            let events: Vec<StoredEvent<'_>> = batch
                .iter()
                .map(|r| StoredEvent {
                    room: &r.ev.room,
                    seq: r.seq,
                    id: &r.ev.id,
                    event: &r.ev.event,
                    frame: &r.frame,
                    origin: (!r.ev.origin_conn.is_empty()).then_some(r.ev.origin_conn.as_str()),
                    echo: !r.ev.no_echo,
                })
                .collect();
            let mut members = self.room.members();
            let sent = deliver_stored(
                &mut members,
                &events,
                self.hub.inner.limits.held,
                self.metrics(),
            );
            if let Some(newest) = batch.last() {
                self.room
                    .latest
                    .store(newest.seq, std::sync::atomic::Ordering::Release);
            }
            sent
        };
        if let Some(r) = batch.iter().rev().find(|r| r.ev.event == STATE_UPDATED) {
            let mut state = self.room.state();
            state.announced = state.announced.max(r.seq);
        }
        let queued = chrono::Utc::now();
        let mut written: Vec<(HopTimes, usize)> = Vec::new();
        let mut spans: Vec<tracing::Span> = Vec::new();
        let mut history = self.room.history();
        for (r, sent) in batch.drain(..).zip(sent) {
            if let Some(times) = r.timed {
                written.push((times, sent));
            }
            if let Some(fanout) = r.span {
                fanout.record("messaging.batch.message_count", sent);
                // Ends with the writes; the fan-out span ends here.
                spans.push(tracing::info_span!(parent: &fanout, "gateway.write", frames = sent));
            }
            history.insert(Entry {
                seq: r.seq,
                prev: r.prev,
                event: Arc::from(r.ev.event.as_str()),
                frame: r.frame,
                stored_ms: r.stored_ms,
            });
        }
        if written.is_empty() && spans.is_empty() {
            return;
        }
        let hops = self.metrics().hops.clone();
        Flusher::current().then(move || {
            let now = chrono::Utc::now();
            for ((http_in, stored_at, at_room), members) in written {
                hops.record(HopSample::new(
                    http_in, stored_at, at_room, queued, now, members,
                ));
            }
            drop(spans);
        });
    }

    fn ephemeral(&self, ev: &pb::RoomEvent) {
        let frame = EventFrame::encode(ev, None);
        let mut members = self.room.members();
        deliver_ephemeral(
            &mut members,
            &ev.event,
            frame.frame(),
            ev.no_echo.then_some(ev.origin_conn.as_str()),
            self.hub.inner.limits.held,
            self.metrics(),
        );
    }

    /// Fills `last < seq <= until` from JetStream and delivers it, retrying
    /// for [`HEAL_FOR`]; false when it could not (the caller resyncs).
    async fn heal(&self, last: u64, until: u64) -> bool {
        let deadline = Instant::now() + HEAL_FOR;
        let mut wait = HEAL_RETRY;
        loop {
            match self.fetch_gap(last, until).await {
                Ok(Some(events)) => {
                    let mut prev = last;
                    let mut batch: Vec<Ready> = events
                        .into_iter()
                        .map(|s| {
                            let r = Ready::new(s.seq, prev, s.event, s.stored_ms, None);
                            prev = r.seq;
                            r
                        })
                        .collect();
                    self.deliver(&mut batch);
                    self.metrics().gaps_healed.inc();
                    tracing::info!(tenant = %self.room.tenant, room = %self.room.name, last, until, "healed a gap in live events");
                    return true;
                }
                Ok(None) => {
                    tracing::warn!(tenant = %self.room.tenant, room = %self.room.name, last, until,
                        "the stream no longer holds the events of a gap");
                    return false;
                }
                Err(e) if Instant::now() + wait < deadline => {
                    tracing::debug!(error = %e, "healing a gap failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    tracing::warn!(tenant = %self.room.tenant, room = %self.room.name, last, until,
                        error = %e, "a gap could not be healed in time");
                    return false;
                }
            }
        }
    }

    /// The room's events after `last` up to `until`; `None` when the stream
    /// no longer holds all of them (the oldest were removed).
    async fn fetch_gap(&self, last: u64, until: u64) -> Result<Option<Vec<Stored>>, BusError> {
        let _permit = tokio::time::timeout(HEAL_FOR, self.hub.inner.heals.acquire())
            .await
            .map_err(|_| BusError::TimedOut)?
            .expect("the heal semaphore is never closed");
        let (t, r) = (&self.room.tenant, &self.room.name);
        let events = self.bus().fetch_range(t, r, last + 1, until).await?;
        if events.last().map(|e| e.seq) != Some(until) {
            return Ok(None);
        }
        // The stream removes a room's oldest events first: if `last` is
        // still there, nothing between it and `until` is missing.
        if last > 0 && self.bus().stored_at(t, r, last).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(events))
    }

    /// Events up to `seq` were not delivered (the members were told to
    /// resync): joiners start after them.
    fn skipped(&self, seq: u64) {
        let _members = self.room.members();
        self.room
            .latest
            .fetch_max(seq, std::sync::atomic::Ordering::AcqRel);
    }

    /// A gap the stream cannot fill: every member is told to reconnect and
    /// resume with `since`, rather than silently skip it.
    fn resync(&self) {
        self.metrics().resyncs.inc();
        let members = self.room.members();
        for m in members.values() {
            let after_ms = rand::random_range(0..RESYNC_JITTER_MS);
            let frame = ServerFrame::Reconnect {
                reason: "resync",
                after_ms,
            }
            .encode();
            m.conn.outbox.text(&frame);
            m.conn.outbox.kill(CloseCode::Restart);
        }
    }

    /// After a possible loss: delivers whatever the stream holds beyond
    /// `last`. Err when NATS could not be asked (retry later).
    async fn check_tail(&self, last: &mut u64) -> Result<(), BusError> {
        self.metrics().tail_checks.inc();
        // After a reconnect the subscriptions are re-sent: once the server
        // answered a flush it has them, and nothing newer can slip by.
        self.bus().flush_live().await?;
        let latest = self
            .bus()
            .last_seq(&self.room.tenant, &self.room.name)
            .await?;
        if latest > *last {
            self.metrics().gaps_detected.inc();
            if !self.heal(*last, latest).await {
                self.resync();
                self.skipped(latest);
            }
            *last = latest;
        }
        Ok(())
    }
}

/// The room's subscriptions, to its end: decode, check the chain, encode
/// each frame once, offer it to every member.
async fn run(task: RoomTask, ready: watch::Sender<Option<bool>>) {
    let (t, r) = (task.room.tenant.clone(), task.room.name.clone());
    let mut loss = task.bus().loss().subscribe();
    loss.mark_unchanged();
    let started = async {
        let sub = task.bus().subscribe_room(&t, &r).await?;
        let last = task.bus().last_seq(&t, &r).await?;
        Ok::<_, BusError>((sub, last))
    }
    .await;
    let (mut sub, mut last) = match started {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(tenant = %t, room = %r, error = %e, "cannot subscribe room");
            let _ = ready.send(Some(false));
            return;
        }
    };
    task.skipped(last);
    let _ = ready.send(Some(true));
    // Set after a possible loss: due once the room has been quiet.
    let mut tail_check: Option<Instant> = None;
    loop {
        let (msg, stored) = tokio::select! {
            Some(m) = sub.live.next() => (m, true),
            Some(m) = sub.ephemeral.next() => (m, false),
            Ok(()) = loss.changed() => {
                tail_check = Some(Instant::now() + TAIL_CHECK_AFTER);
                continue;
            }
            _ = tokio::time::sleep_until(tail_check.unwrap_or_else(Instant::now)), if tail_check.is_some() => {
                tail_check = match task.check_tail(&mut last).await {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::warn!(tenant = %t, room = %r, error = %e, "tail check failed; retrying");
                        Some(Instant::now() + Duration::from_secs(1))
                    }
                };
                continue;
            }
            else => break,
        };
        if let Some(due) = &mut tail_check {
            // Still busy: wait for quiet; the prev chain covers gaps meanwhile.
            *due = (*due).max(Instant::now() + TAIL_CHECK_AFTER);
        }
        if !stored {
            match pb::RoomEvent::decode(msg.payload.clone()) {
                Ok(ev) => task.ephemeral(&ev),
                Err(_) => tracing::warn!(subject = %msg.subject, "undecodable room event dropped"),
            }
            continue;
        }
        // A backlog (more events already waiting) is worked off together:
        // each member gets its share in one push, several frames per system
        // call; a lone event is one frame, written at once.
        let mut batch = vec![msg];
        while batch.len() < LIVE_BATCH {
            match sub.live.next().now_or_never() {
                Some(Some(m)) => batch.push(m),
                _ => break,
            }
        }
        if batch.len() > 1 {
            // Behind already: a moment more lets the batch grow, and each
            // system call carry more frames.
            let until = Instant::now() + COALESCE;
            while batch.len() < LIVE_BATCH {
                match tokio::time::timeout_at(until, sub.live.next()).await {
                    Ok(Some(m)) => batch.push(m),
                    _ => break,
                }
            }
        }
        let mut ready = Vec::with_capacity(batch.len());
        for msg in &batch {
            task.live(msg, &mut last, &mut ready).await;
        }
        task.deliver(&mut ready);
    }
}

/// A stored event decoded, encoded and checked, on its way to the members.
struct Ready {
    seq: u64,
    prev: u64,
    ev: pb::RoomEvent,
    frame: EventFrame,
    stored_ms: i64,
    /// A sampled event's HTTP-in time, store time, and when the room took
    /// it up.
    timed: Option<HopTimes>,
    /// Its trace's fan-out span on this gateway, when traces are exported.
    span: Option<tracing::Span>,
}

/// A sampled event's HTTP-in time (Unix ns), when JetStream stored it, and
/// when the room took it up.
type HopTimes = (
    u64,
    Option<chrono::DateTime<chrono::Utc>>,
    chrono::DateTime<chrono::Utc>,
);

impl Ready {
    fn new(
        seq: u64,
        prev: u64,
        ev: pb::RoomEvent,
        stored_ms: i64,
        timed: Option<HopTimes>,
    ) -> Self {
        Self {
            frame: EventFrame::encode(&ev, Some((seq, prev))),
            seq,
            prev,
            ev,
            stored_ms,
            timed,
            span: None,
        }
    }
}

impl RoomTask {
    /// One stored event from the live subject, checked against the chain:
    /// a gap is healed first (what `ready` holds goes out before the healed
    /// events, which go before this one), then it joins `ready`.
    async fn live(&self, msg: &async_nats::Message, last: &mut u64, ready: &mut Vec<Ready>) {
        let at_room = chrono::Utc::now();
        let Ok(ev) = pb::RoomEvent::decode(msg.payload.clone()) else {
            tracing::warn!(subject = %msg.subject, "undecodable room event dropped");
            return;
        };
        let (Some(seq), Some(prev)) = (
            header_u64(msg, "Nats-Sequence"),
            header_u64(msg, "Nats-Last-Sequence"),
        ) else {
            tracing::warn!(subject = %msg.subject, "live event without sequence headers dropped");
            return;
        };
        if seq <= *last {
            return; // already delivered (healed earlier)
        }
        if prev > *last {
            self.deliver(ready);
            self.metrics().gaps_detected.inc();
            if !self.heal(*last, prev).await {
                self.resync();
                self.skipped(prev);
            }
        }
        *last = seq;
        let stored_at = stored_time(msg);
        let stored_ms = stored_at.map_or(ev.ts_unix_ms, |t| t.timestamp_millis());
        let timed = header_u64(msg, subjects::HOP_HEADER).map(|h| (h, stored_at, at_room));
        let mut r = Ready::new(seq, prev, ev, stored_ms, timed);
        if telemetry::exporting() {
            let span = tracing::info_span!(
                "gateway.fanout",
                otel.kind = "consumer",
                messaging.system = "nats",
                messaging.destination.name = %msg.subject,
                room = %self.room.name,
                seq,
                messaging.batch.message_count = tracing::field::Empty,
            );
            telemetry::set_parent_from(&span, msg.headers.as_ref());
            r.span = Some(span);
        }
        ready.push(r);
    }
}

/// When JetStream stored a republished event (`Nats-Time-Stamp`).
fn stored_time(msg: &async_nats::Message) -> Option<chrono::DateTime<chrono::Utc>> {
    let raw = msg.headers.as_ref()?.get("Nats-Time-Stamp")?.as_str();
    chrono::DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}
