//! This gateway's statistics, reported on NATS every
//! `facts::STATS_INTERVAL_MS` (`sb.stats.gateway.{gateway}`): its totals
//! since it started and each tenant's share. analytics builds
//! `system.metrics`, each tenant's `metrics` and the alerts from them.

use std::collections::BTreeMap;
use std::time::Duration;

use switchboard_platform::Shutdown;
use switchboard_proto::facts::{GatewayStats, STATS_INTERVAL_MS, TenantStats};
use switchboard_proto::subjects;

use crate::gateway::Gateway;

/// Reports until `shutdown`, and once more then (its final counts).
pub fn spawn(gw: Gateway, mut shutdown: Shutdown) {
    let started_at_ms = chrono::Utc::now().timestamp_millis();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(STATS_INTERVAL_MS as u64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = shutdown.wait() => true,
            };
            let mut stats = collect(&gw, started_at_ms);
            stats.stopping = stopping;
            let subject = subjects::gateway_stats(&stats.gateway);
            let body = serde_json::to_vec(&stats).expect("statistics serialize");
            if let Err(e) = gw.bus.shared().client.publish(subject, body.into()).await {
                tracing::debug!(error = %e, "gateway statistics not reported");
            }
            if stopping {
                break;
            }
        }
    });
}

fn collect(gw: &Gateway, started_at_ms: i64) -> GatewayStats {
    let metrics = gw.hub.metrics();
    let mut tenants: BTreeMap<String, TenantStats> = BTreeMap::new();
    for (tenant, connections) in gw.slots.snapshot() {
        tenants.entry(tenant.to_string()).or_default().connections = u64::from(connections);
    }
    for (tenant, rooms) in gw.hub.rooms_by_tenant() {
        tenants.entry(tenant.to_string()).or_default().rooms = rooms;
    }
    for (tenant, frames_in, frames_out) in metrics.tenants.snapshot() {
        let t = tenants.entry(tenant.to_string()).or_default();
        t.frames_in = frames_in;
        t.frames_out = frames_out;
    }
    GatewayStats {
        gateway: gw.presence.gateway_id().to_owned(),
        at_ms: chrono::Utc::now().timestamp_millis(),
        started_at_ms,
        connections: metrics.connections.get().max(0) as u64,
        rooms: metrics.rooms.get().max(0) as u64,
        frames_in: metrics.frames_in.get(),
        frames_out: metrics.frames_out.get(),
        slow_consumer_closes: metrics.slow_consumer_closes.get(),
        tenants,
        stopping: false,
    }
}
