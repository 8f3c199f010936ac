//! ingest's domain: secrets and ids, events, suggestions and notifications,
//! each validated field by field.

pub mod event;
pub mod fields;
pub mod notification;
pub mod secrets;
pub mod suggestion;
