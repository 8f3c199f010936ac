//! The only place NATS subjects, streams and buckets are named (DESIGN.md §2).
//! Every name goes through a validated type, so a subject always has exactly
//! the tokens the design says.

use crate::names::{EventName, RoomName, TenantId};

pub const ROOMS_STREAM: &str = "SB_ROOMS";
pub const DOMAIN_STREAM: &str = "SB_DOMAIN";
pub const INBOX_STREAM: &str = "SB_INBOX";
pub const TASKS_STREAM: &str = "SB_TASKS";
pub const TENANTS_BUCKET: &str = "SB_TENANTS";
pub const PRESENCE_BUCKET: &str = "SB_PRESENCE";
pub const ROOM_STATE_BUCKET: &str = "SB_ROOM_STATE";

/// Stored room events: `sb.evt.{tenant}.{room}`.
pub fn room_event(tenant: &TenantId, room: &RoomName) -> String {
    format!("sb.evt.{tenant}.{room}")
}

/// JetStream's republish of stored room events: `sb.live.{tenant}.{room}`.
pub fn room_live(tenant: &TenantId, room: &RoomName) -> String {
    format!("sb.live.{tenant}.{room}")
}

/// Unstored (ephemeral) room events: `sb.eph.{tenant}.{room}`.
pub fn room_ephemeral(tenant: &TenantId, room: &RoomName) -> String {
    format!("sb.eph.{tenant}.{room}")
}

/// Domain events: `sb.dom.{tenant}.{name}`.
pub fn domain(tenant: &TenantId, name: &EventName) -> String {
    format!("sb.dom.{tenant}.{name}")
}

/// Client commands: `sb.in.{tenant}.{event}`.
pub fn inbox(tenant: &TenantId, event: &EventName) -> String {
    format!("sb.in.{tenant}.{event}")
}

/// Task commands: `sb.task.{tenant}`.
pub fn task(tenant: &TenantId) -> String {
    format!("sb.task.{tenant}")
}

/// Step work for workers of one kind: `sb.work.{kind}`.
pub fn work(kind: &EventName) -> String {
    format!("sb.work.{kind}")
}

/// Stream filters and the republish mapping.
pub const ROOM_EVENTS_ALL: &str = "sb.evt.>";
pub const ROOM_LIVE_ALL: &str = "sb.live.>";
pub const DOMAIN_ALL: &str = "sb.dom.>";
pub const INBOX_ALL: &str = "sb.in.>";
pub const TASKS_ALL: &str = "sb.task.>";

/// Ingest instances tell each other that an API key was revoked (payload:
/// the key's SHA-256), so none keeps accepting it from its cache.
pub const API_KEY_REVOKED: &str = "sb.ctl.apikey.revoked";

/// Key of a presence entry: `{tenant}.{room}.{conn}`.
pub fn presence_key(tenant: &TenantId, room: &RoomName, conn: &str) -> String {
    format!("{tenant}.{room}.{conn}")
}

/// Key of a room's state: `{tenant}.{room}`.
pub fn room_state_key(tenant: &TenantId, room: &RoomName) -> String {
    format!("{tenant}.{room}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_have_one_token_per_name() {
        let t = TenantId::parse("acme").unwrap();
        let r = RoomName::parse("user:42").unwrap();
        assert_eq!(room_event(&t, &r), "sb.evt.acme.user:42");
        assert_eq!(room_live(&t, &r), "sb.live.acme.user:42");
        let e = EventName::parse("chat.query").unwrap();
        assert_eq!(inbox(&t, &e), "sb.in.acme.chat.query");
    }
}
