//! The gateway's counters (`/metrics`, `/v1/stats`) and the per-hop timing
//! of sampled events (`/v1/stats/hops`).
//!
//! Ingest marks a sample of the events it stores with the time its HTTP
//! request arrived (`subjects::HOP_HEADER`); JetStream's RePublish adds when
//! it stored them (`Nats-Time-Stamp`). For those events the room task
//! records when it took them up, when every member had been handed its
//! frame, and — through a marker its thread's flusher reaches after the
//! writes queued before it — when they were written, so the path HTTP in →
//! stored → room task → every member's outbox → on the wire can be read hop
//! by hop. All clocks are wall clocks: meaningful on one machine, or with
//! synchronised ones.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use switchboard_platform::metrics::{Counter, Gauge, Registry};
use switchboard_proto::TenantId;

#[derive(Clone, Default)]
pub struct GatewayMetrics {
    pub connections: Gauge,
    pub rooms: Gauge,
    pub frames_in: Counter,
    pub frames_out: Counter,
    pub slow_consumer_closes: Counter,
    pub gaps_detected: Counter,
    pub gaps_healed: Counter,
    pub resyncs: Counter,
    pub tail_checks: Counter,
    pub replays_fetched: Counter,
    pub rate_limited: Counter,
    pub hops: Hops,
    pub tenants: TenantMeters,
}

impl GatewayMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("switchboard_gateway");
        let counters = [
            ("frames_in", "Client frames received", &self.frames_in),
            ("frames_out", "Frames queued to clients", &self.frames_out),
            (
                "slow_consumer_closes",
                "Connections closed with 4008 because their queue overflowed",
                &self.slow_consumer_closes,
            ),
            (
                "gaps_detected",
                "Live events whose prev did not follow the last delivered seq, and lost tails",
                &self.gaps_detected,
            ),
            (
                "gaps_healed",
                "Gaps in live events filled from JetStream before delivery",
                &self.gaps_healed,
            ),
            (
                "resyncs",
                "Gaps the stream could not fill: the room's members were told to reconnect",
                &self.resyncs,
            ),
            (
                "tail_checks",
                "Checks for a lost tail after the live connection dropped messages or reconnected",
                &self.tail_checks,
            ),
            (
                "replays_fetched",
                "Join replays that had to read JetStream (not served from history)",
                &self.replays_fetched,
            ),
            (
                "rate_limited",
                "Client messages refused by the per-connection rate limit",
                &self.rate_limited,
            ),
        ];
        r.register(
            "connections",
            "Open WebSocket connections",
            self.connections.clone(),
        );
        r.register("rooms", "Rooms with local members", self.rooms.clone());
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
    }

    /// `GET /v1/stats`: the same numbers as JSON.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "connections": self.connections.get(),
            "rooms": self.rooms.get(),
            "frames_in": self.frames_in.get(),
            "frames_out": self.frames_out.get(),
            "slow_consumer_closes": self.slow_consumer_closes.get(),
            "gaps_detected": self.gaps_detected.get(),
            "gaps_healed": self.gaps_healed.get(),
            "resyncs": self.resyncs.get(),
            "tail_checks": self.tail_checks.get(),
            "replays_fetched": self.replays_fetched.get(),
            "rate_limited": self.rate_limited.get(),
        })
    }
}

/// One tenant's counters on this gateway (its share of `frames_in` /
/// `frames_out`), reported with the gateway's statistics.
#[derive(Debug, Default)]
pub struct TenantMeter {
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
}

/// Every tenant's meter. A session takes its tenant's at the start, so the
/// hot paths add to an atomic and never look anything up.
#[derive(Clone, Default)]
pub struct TenantMeters(Arc<Mutex<HashMap<TenantId, Arc<TenantMeter>>>>);

impl TenantMeters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Arc<TenantMeter>>> {
        self.0
            .lock()
            .expect("tenant meter lock is never poisoned: no code panics while holding it")
    }

    pub fn of(&self, tenant: &TenantId) -> Arc<TenantMeter> {
        self.lock().entry(tenant.clone()).or_default().clone()
    }

    /// (tenant, frames in, frames out) so far, for every tenant seen.
    pub fn snapshot(&self) -> Vec<(TenantId, u64, u64)> {
        self.lock()
            .iter()
            .map(|(t, m)| {
                (
                    t.clone(),
                    m.frames_in.load(Ordering::Relaxed),
                    m.frames_out.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

/// Samples kept for `/v1/stats/hops`; older ones are dropped.
const HOP_SAMPLES: usize = 8192;

/// One sampled event's way through, in microseconds per hop.
#[derive(Debug, Clone, Copy)]
pub struct HopSample {
    /// Ingest's HTTP request in → stored by JetStream.
    pub http_to_stored_us: Option<i64>,
    /// Stored → taken up by the room's task (RePublish, the live
    /// connection, the subscription's queue, the task's wake-up).
    pub stored_to_room_us: Option<i64>,
    /// HTTP in → taken up by the room's task.
    pub http_to_room_us: i64,
    /// Taken up → every member handed its frame (queued in its outbox for
    /// the flusher, or behind what it has not read).
    pub room_to_queued_us: i64,
    /// Taken up → the flusher has written what was queued (to every member
    /// that reads; a member that does not keeps it waiting in its outbox).
    pub room_to_written_us: i64,
    pub members: usize,
}

fn us_between(a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
    (b - a).num_microseconds().unwrap_or(i64::MAX)
}

impl HopSample {
    pub fn new(
        http_in_unix_ns: u64,
        stored: Option<DateTime<Utc>>,
        at_room: DateTime<Utc>,
        queued: DateTime<Utc>,
        written: DateTime<Utc>,
        members: usize,
    ) -> Self {
        let http_in = DateTime::from_timestamp_nanos(http_in_unix_ns as i64);
        Self {
            http_to_stored_us: stored.map(|s| us_between(http_in, s)),
            stored_to_room_us: stored.map(|s| us_between(s, at_room)),
            http_to_room_us: us_between(http_in, at_room),
            room_to_queued_us: us_between(at_room, queued),
            room_to_written_us: us_between(at_room, written),
            members,
        }
    }
}

/// The most recent hop samples.
#[derive(Clone, Default)]
pub struct Hops(Arc<Mutex<VecDeque<HopSample>>>);

/// Percentiles of one hop over the samples taken, in microseconds.
#[derive(Debug, Serialize)]
pub struct HopSummary {
    pub p50_us: i64,
    pub p99_us: i64,
    pub max_us: i64,
}

impl Hops {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<HopSample>> {
        self.0
            .lock()
            .expect("hop sample lock is never poisoned: no code panics while holding it")
    }

    pub fn record(&self, s: HopSample) {
        let mut q = self.lock();
        if q.len() == HOP_SAMPLES {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// Percentiles of every hop over the samples since the last take, which
    /// are then forgotten.
    pub fn take_summary(&self) -> serde_json::Value {
        let samples: Vec<HopSample> = self.lock().drain(..).collect();
        let summary = |mut v: Vec<i64>| -> Option<HopSummary> {
            if v.is_empty() {
                return None;
            }
            v.sort_unstable();
            let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
            Some(HopSummary {
                p50_us: at(0.50),
                p99_us: at(0.99),
                max_us: *v.last().expect("not empty"),
            })
        };
        let per_member: Vec<i64> = samples
            .iter()
            .filter(|s| s.members > 0)
            .map(|s| s.room_to_written_us / s.members as i64)
            .collect();
        serde_json::json!({
            "samples": samples.len(),
            "http_to_stored": summary(samples.iter().filter_map(|s| s.http_to_stored_us).collect()),
            "stored_to_room": summary(samples.iter().filter_map(|s| s.stored_to_room_us).collect()),
            "http_to_room": summary(samples.iter().map(|s| s.http_to_room_us).collect()),
            "room_to_queued": summary(samples.iter().map(|s| s.room_to_queued_us).collect()),
            "room_to_written": summary(samples.iter().map(|s| s.room_to_written_us).collect()),
            "written_per_member": summary(per_member),
        })
    }
}
