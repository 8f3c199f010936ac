//! One test binary for the whole system (faster links): every test starts
//! the real services on port 0 against the real NATS and PostgreSQL, with a
//! fresh database and a fresh tenant.

mod admin;
mod auth;
mod events;
mod helpers;
mod protocol;
mod services;
mod shutdown;
