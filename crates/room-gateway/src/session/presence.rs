//! The connection's part in presence: its entry in each room, the
//! `presence.joined` / `presence.left` events for its sub's first and last
//! connection there, and the `presence` op. The bookkeeping across gateways
//! is [`crate::presence`]'s.

use serde_json::Value;
use switchboard_proto::RoomName;
use switchboard_proto::pb;
use switchboard_proto::token::Permissions;

use super::Session;
use crate::protocol::{ErrorFrame, MsgId, ServerFrame};

impl Session {
    fn info(&self) -> Value {
        self.claims
            .info
            .clone()
            .map(Value::Object)
            .unwrap_or(Value::Null)
    }

    /// After a join: the entry, and `presence.joined` when this is the
    /// sub's first connection in the room.
    pub(super) async fn arrive(&self, room: &RoomName) {
        let entered = self
            .gw
            .presence
            .enter(
                &self.claims.tenant,
                room,
                &self.conn.id,
                &self.claims.sub,
                self.info(),
            )
            .await;
        match entered {
            Ok(true) => self.presence_event(room, "presence.joined").await,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "presence entry not written"),
        }
    }

    /// After leaving: the entry goes, and `presence.left` when no other
    /// connection of the sub remains in the room.
    pub(super) async fn exit_presence(&self, room: &RoomName) {
        let exited = self
            .gw
            .presence
            .exit(&self.claims.tenant, room, &self.conn.id, &self.claims.sub)
            .await;
        match exited {
            Ok(true) => self.presence_event(room, "presence.left").await,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "presence entry not removed"),
        }
    }

    async fn presence_event(&self, room: &RoomName, event: &str) {
        let ev = pb::RoomEvent {
            id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
            tenant: self.claims.tenant.to_string(),
            room: room.to_string(),
            event: event.to_owned(),
            data: serde_json::json!({"sub": self.claims.sub, "info": self.info()})
                .to_string()
                .into_bytes(),
            source: "gateway".into(),
            ts_unix_ms: chrono::Utc::now().timestamp_millis(),
            ephemeral: true,
            ..Default::default()
        };
        if let Err(e) = self
            .gw
            .bus
            .publish_ephemeral(&self.claims.tenant, room, &ev)
            .await
        {
            tracing::warn!(error = %e, "presence event not sent");
        }
    }

    pub(super) async fn presence(
        &mut self,
        room: RoomName,
        id: Option<&MsgId>,
    ) -> Result<(), ErrorFrame> {
        if !self.claims.allows(&room, Permissions::PRESENCE) {
            return Err(ErrorFrame::forbidden("presence", &room, "presence"));
        }
        if !self.rooms.contains(&room) {
            return Err(ErrorFrame::not_joined("presence", &room));
        }
        let members = self
            .gw
            .presence
            .members(&self.claims.tenant, &room)
            .await
            .map_err(|_| ErrorFrame::unavailable("presence", &room))?;
        self.push(&ServerFrame::Presence {
            r#ref: id,
            room: room.as_str(),
            members: &members,
        });
        Ok(())
    }
}
