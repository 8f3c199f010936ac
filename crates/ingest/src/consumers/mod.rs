//! What ingest answers on NATS, one file per subject.

pub mod key_owner;
