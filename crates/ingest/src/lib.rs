//! ingest owns tenants and their API keys, and is the HTTP door through which
//! backends and agents put events into rooms.
//!
//! The path of an event: `POST /v1/tenants/{t}/rooms/{r}/events` → the API key
//! is checked against its hash in PostgreSQL → the body is validated (event
//! name rule, size) → a `RoomEvent` is published to `sb.evt.{t}.{r}` with the
//! event id as `Nats-Msg-Id` → once JetStream acks, the answer carries the id
//! and the stream sequence. JetStream republishes it to `sb.live.{t}.{r}`,
//! where gateways pick it up; ingest never touches a socket.

#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
pub mod repository;
pub mod routes;
pub mod schema;
pub mod startup;

pub use config::Settings;
pub use startup::Application;

pub const MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../../migrations/ingest");
