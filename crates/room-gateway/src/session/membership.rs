//! `join`, `leave` and `filter`: the connection's rooms. The handshake
//! itself (held events, floor, replay, going live) is the hub's
//! ([`crate::hub::Entered`]); here are the checks, the room limit, and the
//! presence bookkeeping around it.

use switchboard_proto::RoomName;
use switchboard_proto::names::EventFilter;
use switchboard_proto::tenant::Limits;
use switchboard_proto::token::Permissions;

use super::Session;
use crate::hub::JoinSpec;
use crate::protocol::{ErrorCode, ErrorFrame, Join, MsgId, ServerFrame};

/// How long a closing connection's presence entries may take to go.
const PRESENCE_EXIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Rooms only tokens with `admin` on them may join (DESIGN.md §3).
const SYSTEM_ROOM_PREFIX: &str = "system:";

impl Session {
    /// Answers `joined` (then `state`, the replay, live events) through
    /// the hub. Joining a room again restarts the membership with the new
    /// filters and `since`; presence is not announced again.
    pub(super) async fn join(&mut self, j: Join, id: Option<&MsgId>) -> Result<(), ErrorFrame> {
        let room = j.room;
        let perms = self.claims.permissions(&room);
        if !perms.contains(Permissions::READ) {
            return Err(ErrorFrame::forbidden("join", &room, "read"));
        }
        // System rooms (system:metrics, system:alerts) are for operators.
        if room.as_str().starts_with(SYSTEM_ROOM_PREFIX) && !perms.contains(Permissions::ADMIN) {
            return Err(ErrorFrame::forbidden("join", &room, "admin"));
        }
        let tenant = self.claims.tenant.clone();
        let again = self.rooms.contains(&room);
        if !again {
            let limit = self
                .gw
                .tenants
                .get(&tenant)
                .map_or(Limits::default().rooms_per_connection, |t| {
                    t.limits.rooms_per_connection
                }) as usize;
            if limit != 0 && self.rooms.len() >= limit {
                return Err(ErrorFrame::new(
                    ErrorCode::TooManyRooms,
                    format!("join: this connection is in {limit} rooms, the most allowed; leave one first"),
                )
                .in_room(&room));
            }
        }
        let spec = JoinSpec {
            filters: j.types,
            presence: perms.contains(Permissions::PRESENCE),
            since: j.since,
        };
        let entered = match self.gw.hub.enter(&tenant, &room, &self.conn, spec).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(%tenant, %room, error = %e, "join could not read the room");
                if again {
                    // The old membership is gone with the failed one: so is
                    // its presence, or the refresher would keep it forever.
                    self.rooms.remove(&room);
                    self.depart(&room).await;
                }
                return Err(ErrorFrame::unavailable("join", &room));
            }
        };
        if !again {
            // The presence entry exists before the client hears `joined`,
            // so a second connection of the same sub right after sees it.
            self.arrive(&room).await;
            self.rooms.insert(room.clone());
        }
        entered.go_live(id);
        Ok(())
    }

    pub(super) async fn leave(
        &mut self,
        room: RoomName,
        id: Option<&MsgId>,
    ) -> Result<(), ErrorFrame> {
        if !self.rooms.remove(&room) {
            return Err(ErrorFrame::not_joined("leave", &room));
        }
        self.depart(&room).await;
        self.push(&ServerFrame::Left {
            r#ref: id,
            room: room.as_str(),
            reason: None,
        });
        Ok(())
    }

    pub(super) fn filter(
        &mut self,
        room: RoomName,
        types: Vec<EventFilter>,
        id: Option<&MsgId>,
    ) -> Result<(), ErrorFrame> {
        // `ok` is queued by the hub with the change: events of the new
        // filters (whose chain starts afresh) follow it, never precede it.
        let ok = ServerFrame::Ok { r#ref: id }.encode();
        let known = self.rooms.contains(&room)
            && self
                .gw
                .hub
                .set_filters(&self.claims.tenant, &room, &self.conn.id, types, &ok);
        if !known {
            return Err(ErrorFrame::not_joined("filter", &room));
        }
        Ok(())
    }

    /// Leaves the hub and presence (`presence.left` for the sub's last
    /// connection in the room).
    pub(super) async fn depart(&self, room: &RoomName) {
        self.gw.hub.leave(&self.claims.tenant, room, &self.conn.id);
        self.exit_presence(room).await;
    }

    /// Leaves every room in the hub (the connection is closing): no event
    /// is queued for it any more.
    pub(super) fn leave_rooms(&self) {
        for room in &self.rooms {
            self.gw.hub.leave(&self.claims.tenant, room, &self.conn.id);
        }
    }

    /// Removes the closing connection's presence entries, all at once and
    /// within [`PRESENCE_EXIT`]: a dead NATS must not hold its close.
    pub(super) async fn exit_presence_all(&self) {
        let exits =
            futures_util::future::join_all(self.rooms.iter().map(|r| self.exit_presence(r)));
        if tokio::time::timeout(PRESENCE_EXIT, exits).await.is_err() {
            tracing::warn!(conn = %self.conn.id, "presence entries not removed in time; they expire");
        }
    }
}
