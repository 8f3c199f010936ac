//! A tenant's public configuration, the value of key `{tenant}` in KV
//! `SB_TENANTS`: written by ingest, watched and cached by every gateway.

use serde::{Deserialize, Serialize};

use crate::names::TenantId;

/// Per-tenant limits (DESIGN.md §4). `0` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    pub http_rps: u32,
    pub connections: u32,
    pub rooms_per_connection: u32,
    pub client_msgs_per_s: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            http_rps: 1000,
            connections: 100_000,
            rooms_per_connection: 100,
            client_msgs_per_s: 50,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantConfig {
    pub id: TenantId,
    pub name: String,
    /// Secrets that verify browser tokens (HS256 keys, used as UTF-8 bytes).
    /// The first signs; all verify, so a secret can be rotated without
    /// logging everyone out.
    pub signing_keys: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
}
