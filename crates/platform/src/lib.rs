//! What every Switchboard service needs and nothing service-specific: typed
//! configuration from `SB_*` variables, telemetry, the NATS connection with the
//! streams and buckets of DESIGN.md §2, the PostgreSQL pool with migrations,
//! `/healthz` `/readyz` `/metrics`, problem+json errors and the shutdown signal.

#![forbid(unsafe_code)]

pub mod apikeys;
pub mod callers;
pub mod config;
pub mod db;
pub mod http;
pub mod metrics;
pub mod nats;
pub mod problem;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod tenants;

pub use problem::Problem;
pub use shutdown::{Shutdown, ShutdownTrigger};
