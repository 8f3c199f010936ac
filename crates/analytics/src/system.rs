//! The system watching itself. Gateways report their statistics on NATS
//! (`sb.stats.gateway.{gateway}`, every second); every `SB_METRICS_EVERY`
//! this publishes:
//! - to each tenant's room `metrics`, event `metrics`: that tenant's own
//!   connections, rooms, events in/out per second and tasks running — no
//!   other tenant's figure;
//! - to room `system:metrics` of the operators' tenant (`SB_SYSTEM_TENANT`),
//!   event `system.metrics`: connections, rooms and frames in/out per
//!   second, per gateway and in total;
//! - to room `system:alerts` of that tenant, `alert.triggered` /
//!   `alert.resolved` (`severity` low, medium, high or critical) when a
//!   gateway stops reporting, the projection lags behind the stream past
//!   `SB_ALERT_LAG_EVENTS`, or slow-consumer cut-offs pass
//!   `SB_ALERT_SLOW_CLOSES` in an interval.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use switchboard_platform::Shutdown;
use switchboard_platform::nats::publish_room_event;
use switchboard_proto::facts::GatewayStats;
use switchboard_proto::{RoomName, TenantId, pb, subjects};

use crate::state::AppState;

pub const METRICS_ROOM: &str = "metrics";
pub const SYSTEM_METRICS_ROOM: &str = "system:metrics";
pub const SYSTEM_ALERTS_ROOM: &str = "system:alerts";

/// A gateway's latest report, and the one the last interval's rates were
/// taken from.
struct Reporter {
    latest: GatewayStats,
    heard: Instant,
    previous: Option<GatewayStats>,
}

/// Alerts raised and not yet resolved, by key.
type Raised = BTreeMap<String, Value>;

pub async fn run(state: AppState, mut shutdown: Shutdown) {
    let client = state.bus.client.clone();
    let mut reports = match client.subscribe(subjects::GATEWAY_STATS_ALL).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "gateway statistics not followed: no metrics or alerts");
            return;
        }
    };
    let mut gateways: HashMap<String, Reporter> = HashMap::new();
    let mut raised: Raised = BTreeMap::new();
    let mut tick = tokio::time::interval(state.settings.metrics_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            msg = reports.next() => {
                let Some(msg) = msg else { return };
                match serde_json::from_slice::<GatewayStats>(&msg.payload) {
                    Ok(s) if s.stopping => {
                        gateways.remove(&s.gateway);
                    }
                    Ok(s) => {
                        let r = gateways.entry(s.gateway.clone()).or_insert_with(|| Reporter {
                            latest: s.clone(),
                            heard: Instant::now(),
                            previous: None,
                        });
                        r.latest = s;
                        r.heard = Instant::now();
                    }
                    Err(e) => tracing::debug!(error = %e, "a gateway statistics report was not read"),
                }
            }
            _ = tick.tick() => {
                let interval = state.settings.metrics_every.as_secs_f64();
                tenant_metrics(&state, &gateways, interval).await;
                system_metrics(&state, &gateways, interval).await;
                alerts(&state, &gateways, &mut raised).await;
                for r in gateways.values_mut() {
                    r.previous = Some(r.latest.clone());
                }
                let silent_for = state.settings.alert_gateway_silent * 12;
                gateways.retain(|_, r| r.heard.elapsed() < silent_for);
            }
        }
    }
}

/// Per second, from two reports' counters (0 for a first report).
fn rate(now: u64, before: Option<u64>, secs: f64) -> f64 {
    match before {
        Some(b) if now >= b && secs > 0.0 => (now - b) as f64 / secs,
        _ => 0.0,
    }
}

async fn tenant_metrics(state: &AppState, gateways: &HashMap<String, Reporter>, secs: f64) {
    #[derive(Default)]
    struct Sum {
        connections: u64,
        rooms: u64,
        events_in: f64,
        events_out: f64,
    }
    let mut tenants: BTreeMap<&str, Sum> = BTreeMap::new();
    for r in gateways.values() {
        for (tenant, t) in &r.latest.tenants {
            let before = r.previous.as_ref().and_then(|p| p.tenants.get(tenant));
            let s = tenants.entry(tenant).or_default();
            s.connections += t.connections;
            s.rooms += t.rooms;
            s.events_in += rate(t.frames_in, before.map(|b| b.frames_in), secs);
            s.events_out += rate(t.frames_out, before.map(|b| b.frames_out), secs);
        }
    }
    for (tenant, s) in tenants {
        let running = state.repo.tasks_running(tenant).await.unwrap_or(0);
        let data = json!({
            "connections": s.connections,
            "rooms": s.rooms,
            "events_in_per_s": s.events_in,
            "events_out_per_s": s.events_out,
            "tasks_running": running,
        });
        publish(state, tenant, METRICS_ROOM, "metrics", &data, Keep::Moment).await;
    }
}

async fn system_metrics(state: &AppState, gateways: &HashMap<String, Reporter>, secs: f64) {
    let mut per_gateway = Vec::new();
    let (mut connections, mut rooms, mut fin, mut fout) = (0u64, 0u64, 0.0, 0.0);
    let mut ids: Vec<&String> = gateways.keys().collect();
    ids.sort();
    for id in ids {
        let r = &gateways[id];
        let s = &r.latest;
        let before = r.previous.as_ref();
        let frames_in = rate(s.frames_in, before.map(|b| b.frames_in), secs);
        let frames_out = rate(s.frames_out, before.map(|b| b.frames_out), secs);
        connections += s.connections;
        rooms += s.rooms;
        fin += frames_in;
        fout += frames_out;
        per_gateway.push(json!({
            "gateway": s.gateway, "connections": s.connections, "rooms": s.rooms,
            "frames_in_per_s": frames_in, "frames_out_per_s": frames_out,
        }));
    }
    let data = json!({
        "gateways": per_gateway,
        "total": {"gateways": gateways.len(), "connections": connections, "rooms": rooms,
                  "frames_in_per_s": fin, "frames_out_per_s": fout},
    });
    let tenant = state.settings.system_tenant.to_string();
    publish(
        state,
        &tenant,
        SYSTEM_METRICS_ROOM,
        "system.metrics",
        &data,
        Keep::Moment,
    )
    .await;
}

async fn alerts(state: &AppState, gateways: &HashMap<String, Reporter>, raised: &mut Raised) {
    let settings = &state.settings;
    let mut now: Raised = BTreeMap::new();
    for (id, r) in gateways {
        let silent = r.heard.elapsed();
        if silent > settings.alert_gateway_silent {
            now.insert(
                format!("gateway_silent:{id}"),
                json!({"kind": "gateway_silent", "severity": "high", "gateway": id,
                       "message": format!("gateway {id} has not reported for {:.0} s", silent.as_secs_f64())}),
            );
        }
    }
    let slow: u64 = gateways
        .values()
        .map(|r| {
            let before = r
                .previous
                .as_ref()
                .map_or(r.latest.slow_consumer_closes, |p| p.slow_consumer_closes);
            r.latest.slow_consumer_closes.saturating_sub(before)
        })
        .sum();
    if slow > settings.alert_slow_closes {
        now.insert(
            "slow_consumers".into(),
            json!({"kind": "slow_consumers", "severity": "medium", "closes": slow,
                   "message": format!("{slow} slow clients cut off (4008) in the last interval")}),
        );
    }
    let lag = state.metrics.lag.get().max(0) as u64;
    if lag > settings.alert_lag_events {
        now.insert(
            "projection_lag".into(),
            json!({"kind": "projection_lag", "severity": if lag > settings.alert_lag_events * 10 { "high" } else { "medium" },
                   "pending": lag,
                   "message": format!("the analytics projection is {lag} domain events behind")}),
        );
    }
    let tenant = settings.system_tenant.to_string();
    for (key, alert) in &now {
        if !raised.contains_key(key) {
            let mut a = alert.clone();
            a["key"] = json!(key);
            publish(
                state,
                &tenant,
                SYSTEM_ALERTS_ROOM,
                "alert.triggered",
                &a,
                Keep::Stored,
            )
            .await;
        }
    }
    for (key, alert) in raised.iter() {
        if !now.contains_key(key) {
            let mut a = alert.clone();
            a["key"] = json!(key);
            a["message"] = json!(format!(
                "resolved: {}",
                alert["message"].as_str().unwrap_or("")
            ));
            publish(
                state,
                &tenant,
                SYSTEM_ALERTS_ROOM,
                "alert.resolved",
                &a,
                Keep::Stored,
            )
            .await;
        }
    }
    *raised = now;
}

/// The projection's lag (domain events not yet applied), every interval.
pub async fn watch_lag(state: AppState, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let pending = async {
            let stream = state
                .bus
                .jetstream
                .get_stream(subjects::DOMAIN_STREAM)
                .await
                .ok()?;
            let mut c: async_nats::jetstream::consumer::PullConsumer =
                stream.get_consumer(&state.settings.consumer).await.ok()?;
            let info = c.info().await.ok()?;
            Some(info.num_pending + info.num_ack_pending as u64)
        }
        .await;
        if let Some(p) = pending {
            state.metrics.lag.set(p as i64);
        }
    }
}

/// Metrics are figures of the moment: sent unstored (never replayed).
/// Alerts are stored: an operator who reconnects with `since` gets those
/// raised meanwhile.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    Moment,
    Stored,
}

async fn publish(
    state: &AppState,
    tenant: &str,
    room: &str,
    event: &str,
    data: &Value,
    keep: Keep,
) {
    let (Ok(t), Ok(r)) = (TenantId::parse(tenant.to_owned()), RoomName::parse(room)) else {
        return;
    };
    let ev = pb::RoomEvent {
        id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
        tenant: tenant.to_owned(),
        room: room.to_owned(),
        event: event.to_owned(),
        data: serde_json::to_vec(data).expect("JSON serializes"),
        source: crate::SERVICE.to_owned(),
        ts_unix_ms: chrono::Utc::now().timestamp_millis(),
        ephemeral: keep == Keep::Moment,
        ..Default::default()
    };
    let sent = match keep {
        Keep::Moment => {
            let body: bytes::Bytes = prost::Message::encode_to_vec(&ev).into();
            state
                .bus
                .client
                .publish_with_headers(
                    subjects::room_ephemeral(&t, &r),
                    switchboard_platform::nats::trace_headers(),
                    body,
                )
                .await
                .map_err(|e| e.to_string())
        }
        Keep::Stored => publish_room_event(&state.bus.jetstream, &t, &r, &ev)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    if let Err(e) = sent {
        tracing::warn!(%tenant, room, event, error = %e, "a system event was not sent");
    }
}
