//! ingest owns tenants and their API keys, suggestions, and notification
//! preferences and notifications; it is the HTTP door through which backends
//! and agents put events into rooms. It never touches a socket.
//!
//! The path of an event: `POST /v1/tenants/{t}/rooms/{r}/events` → the API key
//! is checked against its hash in PostgreSQL, and the tenant's `http_rps`
//! ([`ratelimit`], limits watched in KV `SB_TENANTS`) → the body is validated
//! (event name rule, size) → a `RoomEvent` is published to `sb.evt.{t}.{r}`
//! with the event id as `Nats-Msg-Id` → once JetStream acks, the answer
//! carries the id and the stream sequence. JetStream republishes it to
//! `sb.live.{t}.{r}`, where gateways pick it up.
//!
//! The path of a suggestion batch: validated field by field → stored in one
//! transaction with its idempotency record and the notifications it causes →
//! `suggestion.created` to rooms `suggestions` / `user:{id}` and `SB_DOMAIN`
//! ([`outbound`]) → notifications due now are delivered; those held by quiet
//! hours wait in PostgreSQL for the [`delivery`] loop, which reads time from
//! the injectable [`Clock`].

#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod consumers;
pub mod delivery;
pub mod domain;
pub mod hops;
pub mod metrics;
pub mod outbound;
pub mod ratelimit;
pub mod records;
pub mod repository;
pub mod routes;
pub mod schema;
pub mod startup;
pub mod state;

pub use clock::Clock;
pub use config::Settings;
pub use startup::Application;

pub const MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../../migrations/ingest");
