//! What handlers and background loops share: the database, NATS, settings,
//! the clock, the tenants' limits and the metrics. It lives outside
//! `routes/` so that the loops (`delivery`, `outbound`) and the handlers
//! both depend on it, and not on each other.

use std::sync::Arc;

use switchboard_platform::nats::Bus;
use switchboard_platform::tenants::TenantDirectory;

use crate::clock::Clock;
use crate::config::Settings;
use crate::hops::HopSampler;
use crate::metrics::IngestMetrics;
use crate::ratelimit::RateLimiter;
use crate::records::Completer;
use crate::repository::Repository;
use switchboard_platform::apikeys::KeyCache;

#[derive(Clone)]
pub struct AppState {
    pub repo: Repository,
    pub bus: Bus,
    pub settings: Arc<Settings>,
    pub clock: Clock,
    pub tenants: TenantDirectory,
    pub limiter: Arc<RateLimiter>,
    pub keys: KeyCache,
    /// Which stored events are timed hop by hop.
    pub hops: Arc<HopSampler>,
    pub metrics: Arc<IngestMetrics>,
    /// Writes idempotency answers behind their requests.
    pub completer: Completer,
}

/// JetStream on a NATS connection of the HTTP worker's own: a publish and
/// its ack stay on the thread that serves the request. Through the shared
/// connection (driven by the main runtime) every publish crossed threads
/// twice, and at moderate rates those wake-ups cost ingest more than the
/// request itself.
#[derive(Clone)]
pub struct WorkerJetStream(pub async_nats::jetstream::Context);

impl WorkerJetStream {
    pub fn client(&self) -> async_nats::Client {
        self.0.client()
    }
}
