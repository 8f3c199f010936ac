//! One test binary for the whole system (faster links): every test starts
//! the real services on port 0 against the real NATS and PostgreSQL, with a
//! fresh database and a fresh tenant.

mod admin;
mod analytics;
mod api_keys;
mod auth;
mod batches;
mod client_limits;
mod events;
mod gateway;
mod helpers;
mod http_answers;
mod idempotency;
mod membership;
mod notifications;
mod operations;
mod ordering;
mod protocol;
mod recovery;
mod rooms;
mod services;
mod shutdown;
mod suggestions;
mod tokens;
mod traces;
mod walkthrough;
