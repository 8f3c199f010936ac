//! analytics owns projections built from domain events, and serves them.
//!
//! The path of a fact: ingest (or a gateway, or the orchestrator) stores a
//! domain event in `SB_DOMAIN` → the durable consumer ([`consumer`]) pulls
//! a batch → each event is decoded into a fact ([`facts`]; one that cannot
//! be goes to `sb.dead.analytics`) → the batch is applied in one
//! transaction, the newest fact winning ([`repository::projection`]) → the
//! batch is acknowledged → the tenants it changed get `analytics.updated`
//! within a second ([`live`]). Figures are read from the projection's
//! per-day cells with one aggregate query per answer ([`routes`]).
//! Gateways' statistics on NATS become each tenant's `metrics`,
//! `system.metrics` and the alerts ([`system`]).

#![forbid(unsafe_code)]

pub mod config;
pub mod consumer;
pub mod domain;
pub mod facts;
pub mod live;
pub mod metrics;
pub mod repository;
pub mod routes;
pub mod startup;
pub mod state;
pub mod system;

pub use config::Settings;
pub use startup::Application;

pub const SERVICE: &str = "analytics";

pub const MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../../migrations/analytics");
