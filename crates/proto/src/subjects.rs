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

/// A gateway's statistics (core NATS): `sb.stats.gateway.{gateway}`.
pub fn gateway_stats(gateway: &str) -> String {
    format!("sb.stats.gateway.{gateway}")
}

/// Every gateway's statistics.
pub const GATEWAY_STATS_ALL: &str = "sb.stats.gateway.*";

/// Domain events a consumer could not decode, copied aside with their
/// stream sequence: `sb.dead.{consumer}`.
pub fn dead_letter(consumer: &str) -> String {
    format!("sb.dead.{consumer}")
}

/// Who owns an API key (request/reply, answered by ingest, which owns the
/// keys): the request is the key's SHA-256 hash, the reply the tenant id or
/// nothing.
pub const API_KEY_OWNER: &str = "sb.ctl.apikey.owner";

/// Stream filters and the republish mapping.
pub const ROOM_EVENTS_ALL: &str = "sb.evt.>";
pub const ROOM_LIVE_ALL: &str = "sb.live.>";
pub const DOMAIN_ALL: &str = "sb.dom.>";
pub const INBOX_ALL: &str = "sb.in.>";
pub const TASKS_ALL: &str = "sb.task.>";
pub const DEAD_ALL: &str = "sb.dead.>";
pub const DEAD_STREAM: &str = "SB_DEAD";

/// Header ingest puts on a sample of the room events it stores: when the
/// HTTP request arrived (Unix nanoseconds). Gateways time the rest of each
/// such event's way from it (`/v1/stats/hops`).
pub const HOP_HEADER: &str = "Sb-Http-In-Ns";

/// Ingest instances tell each other that an API key was revoked (payload:
/// the key's SHA-256), so none keeps accepting it from its cache.
pub const API_KEY_REVOKED: &str = "sb.ctl.apikey.revoked";

/// A room as it is written inside a KV key or a `$KV.…` subject (DESIGN.md
/// §2): KV keys allow only `[-/_=.A-Za-z0-9]`, so `=` → `=3D`, `:` → `=3A`,
/// `@` → `=40`. Escaping `=` first makes the mapping one-to-one.
pub fn kv_room(room: &RoomName) -> String {
    let raw = room.as_str();
    if !raw.bytes().any(|c| matches!(c, b'=' | b':' | b'@')) {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len() + 8);
    for c in raw.chars() {
        match c {
            '=' => out.push_str("=3D"),
            ':' => out.push_str("=3A"),
            '@' => out.push_str("=40"),
            c => out.push(c),
        }
    }
    out
}

/// The inverse of [`kv_room`]: the room a KV key token names, or `None` when
/// the token is no escaped room name.
pub fn room_from_kv(token: &str) -> Option<RoomName> {
    let mut out = String::with_capacity(token.len());
    let mut rest = token;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code {
            "3D" => '=',
            "3A" => ':',
            "40" => '@',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    RoomName::parse(out).ok()
}

/// Key of a presence entry: `{tenant}.{room}.{conn}`, the room escaped.
pub fn presence_key(tenant: &TenantId, room: &RoomName, conn: &str) -> String {
    format!("{}{conn}", presence_room_prefix(tenant, room))
}

/// What every presence key of one room starts with: `{tenant}.{room}.`.
pub fn presence_room_prefix(tenant: &TenantId, room: &RoomName) -> String {
    format!("{tenant}.{}.", kv_room(room))
}

/// The subjects of one room's presence keys in the bucket's stream:
/// `$KV.SB_PRESENCE.{tenant}.{room}.*`, the room escaped.
pub fn presence_room_subjects(tenant: &TenantId, room: &RoomName) -> String {
    format!(
        "$KV.{PRESENCE_BUCKET}.{}*",
        presence_room_prefix(tenant, room)
    )
}

/// Key of a room's state: `{tenant}.{room}`, the room escaped.
pub fn room_state_key(tenant: &TenantId, room: &RoomName) -> String {
    format!("{tenant}.{}", kv_room(room))
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

    /// What NATS accepts in a KV key (nats.rs `is_valid_key`).
    fn valid_kv_key(k: &str) -> bool {
        !k.is_empty()
            && !k.starts_with('.')
            && !k.ends_with('.')
            && k.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'/' | b'_' | b'=' | b'.'))
    }

    #[test]
    fn kv_keys_escape_every_room_character_kv_refuses() {
        let t = TenantId::parse("acme").unwrap();
        let r = RoomName::parse("user:42").unwrap();
        assert_eq!(room_state_key(&t, &r), "acme.user=3A42");
        assert_eq!(presence_key(&t, &r, "c_1"), "acme.user=3A42.c_1");
        assert_eq!(
            presence_room_subjects(&t, &r),
            "$KV.SB_PRESENCE.acme.user=3A42.*"
        );
        let every = "AZaz09_:@=-";
        let r = RoomName::parse(every).unwrap();
        assert_eq!(kv_room(&r), "AZaz09_=3A=40=3D-");
        assert!(valid_kv_key(&room_state_key(&t, &r)));
        assert!(valid_kv_key(&presence_key(&t, &r, "c_1")));
        for raw in [every, "=3A", "==", "a=", "@@::", "lobby", "x=40y"] {
            let r = RoomName::parse(raw).unwrap();
            assert_eq!(room_from_kv(&kv_room(&r)), Some(r.clone()), "{raw}");
        }
        // Distinct rooms never share a key: `=3A` (three characters) and `:`.
        let a = RoomName::parse("=3A").unwrap();
        let b = RoomName::parse(":").unwrap();
        assert_ne!(kv_room(&a), kv_room(&b));
        assert_eq!(room_from_kv("a=3"), None);
        assert_eq!(room_from_kv("a=41"), None);
    }
}
