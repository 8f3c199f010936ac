//! `publish` (client events to a room, stored or ephemeral) and `send`
//! (commands to backend services on `sb.in`). Both are acked once stored;
//! a `key` makes a retry store nothing new, and the same key with other
//! data is refused, as ingest refuses it (`422`).
//!
//! A stored publish is acked by the room when the publisher is a member of
//! it here: right before its own event, or with `echo: false` in the
//! event's place, so the ack keeps the publisher's `prev` chain in order
//! (PROTOCOL.md, "Echo") and never overtakes earlier events.

use std::collections::HashMap;
use std::time::Duration;

use switchboard_proto::token::Permissions;
use switchboard_proto::{RoomName, ids, pb};
use tokio::time::Instant;

use super::Session;
use crate::protocol::{ErrorFrame, MsgId, Publish, Send, ServerFrame};

/// Sent with `welcome`: ephemeral events of one connection, room and event
/// name are forwarded at most this often.
pub const EPHEMERAL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a publish waits for its room to send the ack before it acks
/// itself (its event is late, or the gap it fell in could not be healed).
const ROOM_ACK_WAIT: Duration = Duration::from_secs(5);

/// Ephemeral events of one (room, event name) waiting for their interval.
struct Slot {
    last_sent: Instant,
    pending: Option<pb::RoomEvent>,
}

/// The connection's ephemeral events, coalesced per room and event name.
#[derive(Default)]
pub(super) struct Ephemeral {
    slots: HashMap<(RoomName, String), Slot>,
}

/// Slots kept without pruning; beyond this, quiet ones are dropped.
const EPHEMERAL_SLOTS: usize = 32;

impl Ephemeral {
    /// Drops slots with nothing waiting that have been quiet for ten
    /// intervals, once there are many: a client naming a new event every
    /// time must not grow the map without end.
    fn prune(&mut self, now: Instant) {
        if self.slots.len() > EPHEMERAL_SLOTS {
            self.slots.retain(|_, s| {
                s.pending.is_some() || now.duration_since(s.last_sent) < EPHEMERAL_INTERVAL * 10
            });
        }
    }

    /// When the next waiting event is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.slots
            .values()
            .filter(|s| s.pending.is_some())
            .map(|s| s.last_sent + EPHEMERAL_INTERVAL)
            .min()
    }
}

/// Why a `key` cannot be acked again.
fn key_reused(op: &str, key: &str, room: &RoomName) -> ErrorFrame {
    ErrorFrame::bad_field(
        "key",
        format!(
            "{op}: key '{key}' was already used for another event or other data; use a new key for a new message"
        ),
    )
    .in_room(room)
}

impl Session {
    fn data_fits(&self, op: &str, data: &str, room: &RoomName) -> Result<(), ErrorFrame> {
        let max = self.gw.settings.max_event_bytes;
        if data.len() > max {
            return Err(ErrorFrame::bad_field(
                "data",
                format!(
                    "{op}: field 'data' is {} bytes of JSON, more than the limit of {max} (SB_MAX_EVENT_BYTES)",
                    data.len()
                ),
            )
            .in_room(room));
        }
        Ok(())
    }

    /// The id of a client's publish (`evt`) or send (`cmd`): derived from
    /// its `key` when given, so a retry is stored once, else fresh.
    fn message_id(&self, kind: &str, room: &RoomName, key: Option<&str>) -> String {
        match key {
            Some(k) => ids::derived_event_id(&[
                self.claims.tenant.as_str(),
                kind,
                room.as_str(),
                &self.claims.sub,
                k,
            ]),
            None => format!("{kind}_{}", uuid::Uuid::now_v7().simple()),
        }
    }

    pub(super) async fn publish(
        &mut self,
        p: Publish,
        id: Option<&MsgId>,
    ) -> Result<(), ErrorFrame> {
        let room = p.room;
        if !self.claims.allows(&room, Permissions::PUBLISH) {
            return Err(ErrorFrame::forbidden("publish", &room, "publish"));
        }
        self.data_fits("publish", &p.data, &room)?;
        let tenant = self.claims.tenant.clone();
        let ev_id = self.message_id("evt", &room, p.key.as_deref());
        let ev = pb::RoomEvent {
            id: ev_id.clone(),
            tenant: tenant.to_string(),
            room: room.to_string(),
            event: p.event.into_string(),
            data: p.data.into_bytes(),
            source: self.claims.sub.clone(),
            ts_unix_ms: chrono::Utc::now().timestamp_millis(),
            ephemeral: p.ephemeral,
            origin_conn: self.conn.id.to_string(),
            no_echo: !p.echo,
        };
        let ack = |seq| ServerFrame::Ack {
            r#ref: id,
            room: room.as_str(),
            seq,
            id: &ev_id,
        };
        if p.ephemeral {
            self.queue_ephemeral(room.clone(), ev).await;
            self.push(&ack(None));
            return Ok(());
        }
        if !self.gw.bus.is_connected() {
            return Err(ErrorFrame::unavailable("publish", &room));
        }
        let hub = &self.gw.hub;
        let in_order = hub.expect_ack(&tenant, &room, &self.conn.id, &ev_id, id.cloned());
        let stored = match self.gw.bus.publish_room_event(&tenant, &room, &ev).await {
            Ok(a) => a,
            Err(e) => {
                if !hub.forget_ack(&tenant, &room, &self.conn.id, &ev_id) {
                    // The ack's wait failed, but the room has seen the event:
                    // it was stored, and acked in order.
                    return Ok(());
                }
                tracing::warn!(error = %e, "client publish failed");
                return Err(ErrorFrame::unavailable("publish", &room));
            }
        };
        if stored.duplicate {
            // A retry with this key: no new event comes, so the room acks
            // only if the first one's event reached it just now.
            let unanswered = hub.forget_ack(&tenant, &room, &self.conn.id, &ev_id);
            match self.gw.bus.room_event_at(stored.sequence).await {
                Ok(Some(first))
                    if !same_message(&first.event, &first.data, &ev.event, &ev.data) =>
                {
                    return Err(key_reused(
                        "publish",
                        p.key.as_deref().unwrap_or_default(),
                        &room,
                    ));
                }
                _ => {}
            }
            if unanswered {
                self.push(&ack(Some(stored.sequence)));
            }
            return Ok(());
        }
        if let Some(sent) = in_order {
            let by_room = tokio::time::timeout(ROOM_ACK_WAIT, sent).await;
            if matches!(by_room, Ok(Ok(())))
                || !hub.forget_ack(&tenant, &room, &self.conn.id, &ev_id)
            {
                return Ok(());
            }
        }
        self.push(&ack(Some(stored.sequence)));
        Ok(())
    }

    /// Sends now if the (room, event) interval has passed, else keeps only
    /// the latest for the end of the interval.
    async fn queue_ephemeral(&mut self, room: RoomName, ev: pb::RoomEvent) {
        let now = Instant::now();
        let slot = self
            .ephemeral
            .slots
            .entry((room.clone(), ev.event.clone()))
            .or_insert(Slot {
                last_sent: now - EPHEMERAL_INTERVAL,
                pending: None,
            });
        if now.duration_since(slot.last_sent) >= EPHEMERAL_INTERVAL {
            slot.last_sent = now;
            slot.pending = None;
            self.send_ephemeral(&room, &ev).await;
        } else {
            slot.pending = Some(ev);
        }
        self.ephemeral.prune(now);
    }

    pub(super) async fn flush_ephemeral(&mut self) {
        let now = Instant::now();
        let due: Vec<(RoomName, pb::RoomEvent)> = self
            .ephemeral
            .slots
            .iter_mut()
            .filter(|(_, s)| {
                s.pending.is_some() && now.duration_since(s.last_sent) >= EPHEMERAL_INTERVAL
            })
            .filter_map(|((room, _), s)| {
                s.last_sent = now;
                s.pending.take().map(|ev| (room.clone(), ev))
            })
            .collect();
        for (room, ev) in due {
            self.send_ephemeral(&room, &ev).await;
        }
        self.ephemeral.slots.retain(|_, s| {
            s.pending.is_some() || now.duration_since(s.last_sent) < EPHEMERAL_INTERVAL * 10
        });
    }

    async fn send_ephemeral(&self, room: &RoomName, ev: &pb::RoomEvent) {
        if let Err(e) = self
            .gw
            .bus
            .publish_ephemeral(&self.claims.tenant, room, ev)
            .await
        {
            tracing::warn!(error = %e, "ephemeral publish failed");
        }
    }

    pub(super) async fn send_command(
        &mut self,
        s: Send,
        id: Option<&MsgId>,
    ) -> Result<(), ErrorFrame> {
        let room = s.room;
        if !self.claims.allows(&room, Permissions::SEND) {
            return Err(ErrorFrame::forbidden("send", &room, "send"));
        }
        self.data_fits("send", &s.data, &room)?;
        let tenant = self.claims.tenant.clone();
        if !self.gw.bus.is_connected() {
            return Err(ErrorFrame::unavailable("send", &room));
        }
        let cmd_id = self.message_id("cmd", &room, s.key.as_deref());
        let cmd = pb::ClientCommand {
            id: cmd_id.clone(),
            tenant: tenant.to_string(),
            room: room.to_string(),
            event: s.event.to_string(),
            data: s.data.into_bytes(),
            sub: self.claims.sub.clone(),
            conn_id: self.conn.id.to_string(),
            key: s.key.clone().unwrap_or_default(),
            ts_unix_ms: chrono::Utc::now().timestamp_millis(),
        };
        let stored = self
            .gw
            .bus
            .send_command(&tenant, &s.event, &cmd)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "client send failed");
                ErrorFrame::unavailable("send", &room)
            })?;
        if stored.duplicate
            && let Ok(Some(first)) = self.gw.bus.command_at(stored.sequence).await
            && !same_message(&first.event, &first.data, &cmd.event, &cmd.data)
        {
            return Err(key_reused(
                "send",
                s.key.as_deref().unwrap_or_default(),
                &room,
            ));
        }
        self.push(&ServerFrame::Ack {
            r#ref: id,
            room: room.as_str(),
            seq: None,
            id: &cmd_id,
        });
        Ok(())
    }
}

/// Whether a stored message is the one a retry sends again: the same event
/// name and the same JSON (compared as JSON, not as text).
fn same_message(event_a: &str, data_a: &[u8], event_b: &str, data_b: &[u8]) -> bool {
    if event_a != event_b {
        return false;
    }
    match (
        serde_json::from_slice::<serde_json::Value>(data_a),
        serde_json::from_slice::<serde_json::Value>(data_b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => data_a == data_b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_is_the_same_message_only_with_the_same_event_and_data() {
        assert!(same_message(
            "client.a",
            br#"{"x":1,"y":2}"#,
            "client.a",
            br#"{"y":2,"x":1}"#
        ));
        assert!(!same_message(
            "client.a",
            br#"{"x":1}"#,
            "client.a",
            br#"{"x":2}"#
        ));
        assert!(!same_message("client.a", b"1", "client.b", b"1"));
    }
}
