//! room-gateway owns WebSocket connections and which rooms they are in. It
//! talks only to NATS and keeps no state another instance needs.
//!
//! The path of an event: JetStream republishes a stored event on
//! `sb.live.{tenant}.{room}` → the [`hub::RoomHub`] holds one core
//! subscription per room with local members → it encodes the `event` frame
//! once and offers the same bytes to each member's bounded queue → each
//! [`session`] writes its queue to its socket. A member whose queue is full is
//! cut off (4008) instead of slowing the room.
//!
//! The path of a connection: `GET /v1/ws` → the token (subprotocol, header or
//! query) is verified with the tenant's signing secret from KV `SB_TENANTS`
//! ([`tenants`]) → upgrade → `welcome` → client ops (PROTOCOL.md).

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod config;
pub mod frames;
pub mod history;
pub mod hub;
pub mod metrics;
pub mod presence;
pub mod session;
pub mod slots;
pub mod startup;
pub mod tenants;
pub mod upgrade;
pub mod wire;

pub use config::Settings;
pub use startup::Application;
