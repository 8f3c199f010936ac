//! Prometheus metrics: each service registers its own in a [`Registry`] at
//! start-up; `/metrics` encodes it.

use std::sync::Arc;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::registry::Registry;

/// A registry that is complete: no more registration once shared.
#[derive(Clone)]
pub struct SharedRegistry(Arc<Registry>);

impl SharedRegistry {
    pub fn new(registry: Registry) -> Self {
        Self(Arc::new(registry))
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.0)
            .expect("writing to a String cannot fail");
        out
    }
}
