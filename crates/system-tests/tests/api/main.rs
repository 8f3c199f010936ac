//! One test binary for the whole system (faster links): every test starts
//! the real services on port 0 against the real NATS and PostgreSQL, with a
//! fresh database and a fresh tenant.

mod admin;
mod api_keys;
mod auth;
mod events;
mod gateway;
mod helpers;
mod notifications;
mod protocol;
mod rooms;
mod services;
mod shutdown;
mod suggestions;
mod tokens;
