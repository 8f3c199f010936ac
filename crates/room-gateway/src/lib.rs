//! room-gateway owns WebSocket connections and which rooms they are in. It
//! talks only to NATS and keeps no state another instance needs.
//!
//! The path of an event: JetStream republishes a stored event on
//! `sb.live.{tenant}.{room}` → the [`bus::Bus`] delivers it to the room's
//! task in the [`hub::RoomHub`], which owns the room's sequence (gaps are
//! healed from JetStream first) → the task encodes the `event` frame once
//! and pushes the same bytes to each member's [`outbox::Outbox`] → written
//! to the socket right there while the client keeps up, else queued for the
//! connection's [`session`] to write when the socket drains. A member whose
//! queue overflows is cut off (4008) instead of slowing the room.
//!
//! The path of a connection: `GET /v1/ws` → the token (subprotocol, header or
//! query) is verified with the tenant's signing secret from KV `SB_TENANTS`
//! ([`tenants`]) → upgrade ([`upgrade`], [`wire`]) → `welcome` → client
//! messages ([`protocol`]), handled in order by the [`session`].

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod bus;
pub mod config;
pub mod gateway;
pub mod history;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod presence;
pub mod protocol;
pub mod session;
pub mod slots;
pub mod startup;
pub mod stats;
pub mod tenants;
pub mod upgrade;
pub mod wire;

pub use config::Settings;
pub use startup::Application;
