//! What analytics shows on `/metrics`: the projection's progress (facts
//! applied, batches, dead letters, lag), beside the HTTP figures every
//! service records.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub struct AnalyticsMetrics {
    pub facts_applied: Counter,
    pub dead_letters: Counter,
    pub batch_seconds: Histogram,
    /// Domain events stored but not yet applied (the consumer's pending).
    pub lag: Gauge,
    pub updates_published: Counter,
}

impl Default for AnalyticsMetrics {
    fn default() -> Self {
        Self {
            facts_applied: Counter::default(),
            dead_letters: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            lag: Gauge::default(),
            updates_published: Counter::default(),
        }
    }
}

impl AnalyticsMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("switchboard_analytics");
        r.register(
            "facts_applied",
            "Domain events applied to the projection",
            self.facts_applied.clone(),
        );
        r.register(
            "dead_letters",
            "Domain events that could not be decoded, copied to sb.dead.analytics and acknowledged",
            self.dead_letters.clone(),
        );
        r.register_with_unit(
            "batch_duration",
            "Time to apply one batch of domain events (one transaction)",
            Unit::Seconds,
            self.batch_seconds.clone(),
        );
        r.register(
            "lag",
            "Domain events stored in SB_DOMAIN and not yet applied",
            self.lag.clone(),
        );
        r.register(
            "updates_published",
            "analytics.updated events published to tenants' analytics rooms",
            self.updates_published.clone(),
        );
    }
}
