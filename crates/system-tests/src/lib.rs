//! End-to-end tests live in `tests/api`; this crate has no code of its own.
