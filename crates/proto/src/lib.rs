//! The contract between Switchboard services and with their users: the prost
//! messages of `proto/switchboard.proto`, the NATS subjects they travel on, the
//! name rules for tenants, rooms and events (DESIGN.md §2), and the browser
//! token (DESIGN.md §3). Nothing here does I/O.

#![forbid(unsafe_code)]

pub mod facts;
pub mod ids;
pub mod names;
pub mod room_state;
pub mod subjects;
pub mod tenant;
pub mod token;

/// Generated prost messages (`switchboard.v1`).
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/switchboard.v1.rs"));
}

pub use names::{EventName, NameError, RoomName, RoomPattern, TenantId};
