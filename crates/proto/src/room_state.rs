//! A room's latest state, the value of key `{tenant}.{room}` in KV
//! `SB_ROOM_STATE`: written by ingest (`PUT …/rooms/{room}/state`) after it
//! stored the `state.updated` event that announces it, read by gateways on
//! `join` and sent as the `state` frame.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomState {
    /// The `seq` of the `state.updated` event that announced this state.
    pub seq: u64,
    pub data: serde_json::Value,
    /// When it was set, milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}
