//! The tenants a gateway knows: KV `SB_TENANTS`, watched and cached, never
//! read from PostgreSQL. `/readyz` waits until the first load is done. The
//! watcher lives in `switchboard_platform::tenants`, shared with ingest (which
//! reads per-tenant rate limits from it).

pub use switchboard_platform::tenants::TenantDirectory;
