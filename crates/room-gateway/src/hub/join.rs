//! The join handshake, in one place. A joining member is added to the room
//! first, so live events from then on are held for it; then the room's
//! latest seq (the floor `joined` reports), its state and — with `since` —
//! the events after `since` are read; then, under the members lock, the
//! member gets `joined`, `state`, the replay and what was held after the
//! floor, in that order, and goes live.
//!
//! `recovered` tells the truth of the stream (PROTOCOL.md): it is true only
//! when every event of the room after `since` follows. A `since` that is no
//! event of this room, is beyond its latest, or has left the stream (by the
//! per-room limit or by age) is not recovered, and nothing is invented.

use std::sync::Arc;

use switchboard_proto::names::EventFilter;
use switchboard_proto::room_state::RoomState;
use switchboard_proto::{RoomName, TenantId};
use tokio::sync::watch;

use super::member::{Member, MemberState, release, wants};
use super::room::spawn_room;
use super::{Room, RoomHub, key};
use crate::bus::{BusError, Retention, Stored};
use crate::history::{Entry, History};
use crate::hub::member::ConnHandle;
use crate::protocol::{EventFrame, Frame, MsgId, ServerFrame};

/// How much older than the stream's own age limit an event seen by this
/// gateway must be before it is counted as gone: the gateway's clock and
/// the publisher's may differ a little.
const AGE_MARGIN_MS: i64 = 5_000;

/// The `prev` of a history entry whose own predecessor is not known: a
/// chain walked back to it stops there.
const UNKNOWN_PREV: u64 = u64::MAX;

/// Why a join could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the message broker is unreachable")]
    Unavailable(#[source] Option<BusError>),
}

impl From<BusError> for JoinError {
    fn from(e: BusError) -> Self {
        Self::Unavailable(Some(e))
    }
}

/// What a member asks for.
pub struct JoinSpec {
    pub filters: Vec<EventFilter>,
    /// The token grants `presence` here.
    pub presence: bool,
    /// The last seq the client holds.
    pub since: Option<u64>,
}

/// A replay from `since`.
struct Recovery {
    recovered: bool,
    /// The events after `since` that pass the member's filters, each with
    /// the `prev` of the member's chain (which starts at `since`).
    frames: Vec<Frame>,
    /// The chain's end: the last replayed seq, or `since`.
    last: u64,
}

/// A member that has been added and read for, but not yet told: dropping
/// it (a failed or abandoned join) takes the member out of the room.
pub struct Entered {
    hub: RoomHub,
    room: Arc<Room>,
    conn: ConnHandle,
    /// The room's latest seq when the join read it.
    pub seq: u64,
    state: Option<RoomState>,
    recovery: Option<Recovery>,
    live: bool,
}

impl RoomHub {
    /// Adds `conn` to the room (replacing an earlier membership of it),
    /// subscribing the room if it is new here, and reads what the join
    /// needs. Live events are held for it until [`Entered::go_live`].
    pub async fn enter(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        conn: &ConnHandle,
        spec: JoinSpec,
    ) -> Result<Entered, JoinError> {
        if !self.inner.bus.is_connected() {
            // Nothing to read from: say so now, not after a timeout.
            return Err(JoinError::Unavailable(None));
        }
        let r = loop {
            let r = self
                .rooms()
                .entry(key(tenant, room))
                .or_insert_with(|| self.open_room(tenant, room))
                .clone();
            let mut members = r.members();
            if r.closed.load(std::sync::atomic::Ordering::Acquire) {
                // Its last member just left; it leaves the map in a moment.
                drop(members);
                tokio::task::yield_now().await;
                continue;
            }
            members.insert(
                conn.id.clone(),
                Member::joining(conn.clone(), spec.filters.clone(), spec.presence),
            );
            drop(members);
            break r;
        };
        let mut entered = Entered {
            hub: self.clone(),
            room: r.clone(),
            conn: conn.clone(),
            seq: 0,
            state: None,
            recovery: None,
            live: false,
        };
        let mut ready = r.ready.clone();
        let subscribed = matches!(
            ready.wait_for(Option::is_some).await.as_deref(),
            Ok(Some(true))
        );
        if !subscribed {
            return Err(JoinError::Unavailable(None));
        }
        let bus = &self.inner.bus;
        // The floor: what the room's task has delivered. Events after it
        // reach this member (held now), events up to it do not (so the
        // replay ends there). A since beyond it may be an event this
        // gateway has not received yet: JetStream says.
        let mut seq = r.latest();
        if spec.since.is_some_and(|since| since > seq) {
            seq = seq.max(bus.last_seq(tenant, room).await?);
        }
        entered.seq = seq;
        entered.state = self.state_of(&r).await?;
        if let Some(since) = spec.since {
            entered.recovery = Some(
                self.recover(&r, since, seq, &spec.filters, spec.presence)
                    .await?,
            );
        }
        Ok(entered)
    }

    /// The room's state: the one kept, while no `state.updated` since says
    /// it changed; else read from KV (and kept once the KV has caught up).
    async fn state_of(&self, r: &Room) -> Result<Option<RoomState>, BusError> {
        if let Some(state) = r.state().current() {
            return Ok(state);
        }
        let read = self.inner.bus.room_state(&r.tenant, &r.name).await?;
        let mut cache = r.state();
        if read.as_ref().map_or(0, |v| v.seq) >= cache.announced {
            cache.loaded = true;
            cache.value = read.clone();
        }
        Ok(read)
    }

    fn open_room(&self, tenant: &TenantId, room: &RoomName) -> Arc<Room> {
        let (ready_tx, ready) = watch::channel(None);
        let r = Arc::new(Room {
            tenant: tenant.clone(),
            name: room.clone(),
            members: Default::default(),
            ready,
            task: Default::default(),
            closed: Default::default(),
            history: std::sync::Mutex::new(History::new(self.inner.limits.history_cap)),
            fetch: Default::default(),
            latest: Default::default(),
            state: Default::default(),
        });
        let task = spawn_room(self.clone(), r.clone(), ready_tx);
        *r.task.lock().expect("room task lock is never poisoned") = Some(task);
        self.inner.metrics.rooms.inc();
        r
    }

    /// The events after `since` up to `until` (the floor), from this
    /// gateway's history or else from JetStream (one fetch per room at a
    /// time, a bounded number at once), and whether they are all there is.
    async fn recover(
        &self,
        r: &Room,
        since: u64,
        until: u64,
        filters: &[EventFilter],
        presence: bool,
    ) -> Result<Recovery, BusError> {
        let chained = |entries: &[Entry]| chained(since, entries, filters, presence);
        let lost = || Recovery {
            recovered: false,
            frames: Vec::new(),
            last: since,
        };
        let retention = self.inner.bus.retention();
        if since > until {
            // Beyond the room's latest: no event of this room.
            return Ok(lost());
        }
        if since == until {
            // `since` is the room's latest event, or both are 0: an empty
            // room, whose whole history is there unless some aged out.
            let whole = since > 0 || !may_have_aged(&retention);
            return Ok(if whole { chained(&[]) } else { lost() });
        }
        if let Some(hit) = self.cached(r, since, until, &retention) {
            return Ok(chained(&hit));
        }
        let _one_per_room = r.fetch.lock().await;
        if let Some(hit) = self.cached(r, since, until, &retention) {
            return Ok(chained(&hit));
        }
        let _permit = self
            .inner
            .fetches
            .acquire()
            .await
            .expect("the fetch semaphore is never closed");
        self.inner.metrics.replays_fetched.inc();
        let bus = &self.inner.bus;
        // `since` itself is read too: it proves `since` is a stored event of
        // this room, and lets the history vouch for it next time.
        let mut events = bus
            .fetch_range(&r.tenant, &r.name, since.max(1), until)
            .await?;
        let anchor = if since > 0 {
            if events.first().map(|e| e.seq) != Some(since) {
                return Ok(lost());
            }
            Some(events.remove(0))
        } else {
            None
        };
        // The newest must be the floor; since 0 also needs the room's whole
        // history, which the stream vouches for only below its limits.
        let mut complete = events.last().is_some_and(|e| e.seq == until)
            && (since > 0 || whole_history(events.len(), &retention));
        // The stream removes a room's oldest events first, also while the
        // fetch runs: what was read is whole if, afterwards, `since` is
        // still stored (or, from 0, the room's first stored event is the
        // first read).
        if complete {
            complete = if since > 0 {
                bus.stored_at(&r.tenant, &r.name, since).await?.is_some()
            } else {
                bus.first_seq(&r.tenant, &r.name).await? == events.first().map(|e| e.seq)
            };
        }
        if !complete {
            return Ok(lost());
        }
        let entry = |s: &Stored, prev: u64| Entry {
            seq: s.seq,
            prev,
            event: Arc::from(s.event.event.as_str()),
            frame: EventFrame::encode(&s.event, Some((s.seq, prev))),
            stored_ms: s.stored_ms,
        };
        let mut prev = since;
        let entries: Vec<Entry> = events
            .iter()
            .map(|s| {
                let e = entry(s, prev);
                prev = s.seq;
                e
            })
            .collect();
        {
            let mut h = r.history();
            if let Some(a) = &anchor {
                // Its own prev is not known: no chain runs through it.
                h.insert(Entry {
                    prev: UNKNOWN_PREV,
                    ..entry(a, 0)
                });
            }
            for e in &entries {
                h.insert(e.clone());
            }
        }
        Ok(chained(&entries))
    }

    /// The events after `since` from this gateway's history, when it holds
    /// them all and can vouch that the stream still holds `since` too.
    fn cached(
        &self,
        r: &Room,
        since: u64,
        until: u64,
        retention: &Retention,
    ) -> Option<Vec<Entry>> {
        let h = r.history();
        let chain = h.chain(since, until)?;
        if since == 0 {
            return whole_history(chain.len(), retention).then_some(chain);
        }
        // The stream keeps the room's newest `per_room` events, for at most
        // `max_age`: `since` is among them while fewer follow it and it is
        // younger than that.
        let young = match retention.max_age {
            None => true,
            Some(age) => {
                let stored = h.stored_ms(since)?;
                stored - AGE_MARGIN_MS
                    > chrono::Utc::now().timestamp_millis() - age.as_millis() as i64
            }
        };
        (chain.len() < retention.per_room && young).then_some(chain)
    }
}

/// Whether the stream can have removed events for their age yet: not
/// before it has existed for its age limit.
fn may_have_aged(retention: &Retention) -> bool {
    // Erring towards "may have": the margin is taken off the age.
    retention.max_age.is_some_and(|age| {
        chrono::Utc::now().timestamp_millis() + AGE_MARGIN_MS
            >= retention.created_ms + age.as_millis() as i64
    })
}

/// Whether `count` events are a room's whole history: the room never
/// reached the per-room limit (which would have removed its oldest) and
/// nothing can have aged out. The stream cannot say more: an event removed
/// for its age leaves no trace in the room's later ones.
fn whole_history(count: usize, retention: &Retention) -> bool {
    count < retention.per_room && !may_have_aged(retention)
}

/// A recovered replay: the entries the member is sent live too (its
/// filters, its presence right), chained from `since`.
fn chained(since: u64, entries: &[Entry], filters: &[EventFilter], presence: bool) -> Recovery {
    let mut last = since;
    let mut frames = Vec::new();
    for e in entries
        .iter()
        .filter(|e| wants(filters, presence, &e.event))
    {
        frames.push(e.frame.with_prev(last));
        last = e.seq;
    }
    Recovery {
        recovered: true,
        frames,
        last,
    }
}

impl Entered {
    /// Whether the replay from `since` is whole (`None` without `since`).
    pub fn recovered(&self) -> Option<bool> {
        self.recovery.as_ref().map(|r| r.recovered)
    }

    /// Sends `joined`, then `state`, then the replay, then what was held
    /// after the floor, and delivers live from now on.
    pub fn go_live(mut self, r#ref: Option<&MsgId>) {
        let metrics = self.hub.metrics().clone();
        let room = self.room.name.as_str();
        let mut first = vec![
            ServerFrame::Joined {
                r#ref,
                room,
                seq: self.seq,
                recovered: self.recovery.as_ref().map(|r| r.recovered),
                missed: self.recovery.as_ref().map(|r| r.frames.len()),
            }
            .encode()
            .into_wire(),
        ];
        if let Some(state) = &self.state {
            first.push(
                ServerFrame::State {
                    room,
                    seq: state.seq,
                    data: &state.data,
                }
                .encode()
                .into_wire(),
            );
        }
        let mut last = None;
        if let Some(r) = self.recovery.take()
            && r.recovered
        {
            first.extend(r.frames.into_iter().map(Frame::into_wire));
            last = Some(r.last);
        }
        let mut members = self.room.members();
        if let Some(m) = members.get_mut(&*self.conn.id)
            && matches!(m.state, MemberState::Joining { .. })
        {
            release(m, first, self.seq, last, &metrics);
        }
        drop(members);
        self.live = true;
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        if self.live {
            return;
        }
        let joining = self
            .room
            .members()
            .get(&*self.conn.id)
            .is_some_and(|m| matches!(m.state, MemberState::Joining { .. }));
        if joining {
            self.hub
                .leave(&self.room.tenant, &self.room.name, &self.conn.id);
        }
    }
}
