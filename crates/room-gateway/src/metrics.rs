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
    }
}
