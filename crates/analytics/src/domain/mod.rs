//! analytics' domain: time ranges and the figures of the answers, built
//! from the projection's rows, and the changes between two answers that
//! `analytics.updated` carries.

pub mod figures;
pub mod ranges;
pub mod tasks;
