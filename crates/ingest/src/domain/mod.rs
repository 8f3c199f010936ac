//! ingest's domain: secrets and ids, and events validated field by field.

pub mod event;
pub mod secrets;
