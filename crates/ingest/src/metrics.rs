//! What ingest shows on `/metrics`, beside the request counts and latencies
//! every service records by route and status (`platform::http::observe`):
//! how long JetStream takes to store what it is given, what waits in
//! PostgreSQL to be published (the announcement outbox, held
//! notifications), and what was refused or answered from a record.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// What was stored: a single event, a batch, an ephemeral event (core
/// NATS), a room state, an announcement or a notification.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum PublishKind {
    Single,
    Batch,
    Ephemeral,
    State,
    Announcement,
    Notification,
}

impl prometheus_client::encoding::EncodeLabelValue for PublishKind {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            Self::Single => "single",
            Self::Batch => "batch",
            Self::Ephemeral => "ephemeral",
            Self::State => "state",
            Self::Announcement => "announcement",
            Self::Notification => "notification",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: PublishKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    kind: PublishKind,
    outcome: &'static str,
}

type Latency = Family<KindLabel, Histogram, fn() -> Histogram>;

pub struct IngestMetrics {
    publish_seconds: Latency,
    publishes: Family<OutcomeLabels, Counter>,
    /// Announcements stored with their change but not yet published.
    pub outbox_backlog: Gauge,
    /// Notifications stored and not yet delivered (held by quiet hours, or
    /// waiting for a retry).
    pub undelivered_notifications: Gauge,
    /// Requests refused with `429` for the tenant's `http_rps`.
    pub rate_limited: Counter,
    /// Retries answered from their idempotency record (nothing stored again).
    pub idempotent_replays: Counter,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        fn histogram() -> Histogram {
            // 50 µs to ~1.6 s.
            Histogram::new(exponential_buckets(0.00005, 2.0, 16))
        }
        Self {
            publish_seconds: Family::new_with_constructor(histogram),
            publishes: Family::default(),
            outbox_backlog: Gauge::default(),
            undelivered_notifications: Gauge::default(),
            rate_limited: Counter::default(),
            idempotent_replays: Counter::default(),
        }
    }
}

impl IngestMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("switchboard_ingest");
        r.register_with_unit(
            "publish_duration",
            "From sending to NATS to JetStream's ack (one ack per batch), by kind",
            Unit::Seconds,
            self.publish_seconds.clone(),
        );
        r.register(
            "publishes",
            "Publishes to NATS by kind and outcome (ok, failed)",
            self.publishes.clone(),
        );
        r.register(
            "outbox_backlog",
            "Suggestion announcements stored but not yet published",
            self.outbox_backlog.clone(),
        );
        r.register(
            "undelivered_notifications",
            "Notifications stored and not yet delivered (held for quiet hours or awaiting a retry)",
            self.undelivered_notifications.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused with 429 for the tenant's http_rps",
            self.rate_limited.clone(),
        );
        r.register(
            "idempotent_replays",
            "Retried requests answered from their idempotency record",
            self.idempotent_replays.clone(),
        );
    }

    /// Times a publish from now: [`Timed::done`] records it.
    pub fn publish(&self, kind: PublishKind) -> Timed<'_> {
        Timed {
            metrics: self,
            kind,
            started: Instant::now(),
        }
    }
}

/// A publish being timed.
pub struct Timed<'a> {
    metrics: &'a IngestMetrics,
    kind: PublishKind,
    started: Instant,
}

impl Timed<'_> {
    /// Records the outcome; the latency only for a success.
    pub fn done<T, E>(self, result: Result<T, E>) -> Result<T, E> {
        let outcome = if result.is_ok() {
            self.metrics
                .publish_seconds
                .get_or_create(&KindLabel { kind: self.kind })
                .observe(self.started.elapsed().as_secs_f64());
            "ok"
        } else {
            "failed"
        };
        self.metrics
            .publishes
            .get_or_create(&OutcomeLabels {
                kind: self.kind,
                outcome,
            })
            .inc();
        result
    }
}
