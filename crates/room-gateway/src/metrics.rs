//! The gateway's counters, shared by `/metrics` and (later) `/v1/stats`.

use switchboard_platform::metrics::{Counter, Gauge, Registry};

#[derive(Clone, Default)]
pub struct GatewayMetrics {
    pub connections: Gauge,
    pub rooms: Gauge,
    pub frames_in: Counter,
    pub frames_out: Counter,
    pub slow_consumer_closes: Counter,
    pub gaps_detected: Counter,
    pub gaps_healed: Counter,
    pub replays_fetched: Counter,
    pub rate_limited: Counter,
}

impl GatewayMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("switchboard_gateway");
        r.register(
            "connections",
            "Open WebSocket connections",
            self.connections.clone(),
        );
        r.register("rooms", "Rooms with local members", self.rooms.clone());
        r.register(
            "frames_in",
            "Client frames received",
            self.frames_in.clone(),
        );
        r.register(
            "frames_out",
            "Event frames queued to clients",
            self.frames_out.clone(),
        );
        r.register(
            "slow_consumer_closes",
            "Connections closed with 4008 because their queue overflowed",
            self.slow_consumer_closes.clone(),
        );
        r.register(
            "gaps_detected",
            "Live events whose prev did not follow the last delivered seq",
            self.gaps_detected.clone(),
        );
        r.register(
            "gaps_healed",
            "Gaps in live events filled from JetStream before delivery",
            self.gaps_healed.clone(),
        );
        r.register(
            "replays_fetched",
            "Join replays that had to read JetStream (not served from history)",
            self.replays_fetched.clone(),
        );
        r.register(
            "rate_limited",
            "Client messages refused by the per-connection rate limit",
            self.rate_limited.clone(),
        );
    }
}

impl GatewayMetrics {
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
            "replays_fetched": self.replays_fetched.get(),
            "rate_limited": self.rate_limited.get(),
        })
    }
}
