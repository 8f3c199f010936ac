//! `analytics.updated`: after the projection changes a tenant's
//! suggestions, room `analytics` of that tenant hears — at most once per
//! `SB_ANALYTICS_UPDATE_EVERY` — what changed in the answer of every time
//! range, so a dashboard stays exact by applying it:
//!
//! ```json
//! {"version": 42, "base": 40,
//!  "ranges": {"7d": {"figures": {"total_suggestions": 12, …},
//!                    "by_agent_type": {"set": [{…}], "remove": ["churn"]},
//!                    "by_priority": [{…} ×4],
//!                    "timeline": {"set": [{…}], "from": "2026-11-30", "to": "2026-12-06"}},
//!             "30d": {…}, …}}
//! ```
//!
//! `version` is the figures' version after the change (the REST answer's
//! `Sb-Figures-Version` header), `base` the one the change is from: a
//! dashboard holding version `v` applies an update when `base <= v <
//! version` and reloads from REST when `base > v` (it missed one). An
//! instance's first update for a tenant carries every figure (`base` 0).

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value, json};
use switchboard_platform::Shutdown;
use switchboard_platform::nats::publish_room_event;
use switchboard_proto::{RoomName, TenantId, pb};
use tokio::sync::mpsc;

use crate::domain::figures::Analytics;
use crate::domain::ranges::{SUGGESTION_RANGES, TimeRange};
use crate::routes::analytics::answer;
use crate::state::AppState;

pub const ANALYTICS_ROOM: &str = "analytics";
pub const UPDATED: &str = "analytics.updated";

/// What was last sent to a tenant's dashboards.
struct Sent {
    version: u64,
    ranges: Vec<(TimeRange, Analytics)>,
}

/// Publishes updates for the tenants `changed` reports, until `shutdown`.
pub async fn run(
    state: AppState,
    mut changed: mpsc::Receiver<BTreeSet<String>>,
    mut shutdown: Shutdown,
) {
    let mut pending: BTreeSet<String> = BTreeSet::new();
    let mut sent: HashMap<String, Sent> = HashMap::new();
    let mut tick = tokio::time::interval(state.settings.update_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            got = changed.recv() => match got {
                Some(tenants) => pending.extend(tenants),
                None => return,
            },
            _ = tick.tick() => {
                for tenant in std::mem::take(&mut pending) {
                    if let Err(e) = publish(&state, &tenant, &mut sent).await {
                        tracing::warn!(%tenant, error = %e, "analytics.updated not published; the next change carries it");
                        sent.remove(&tenant);
                    }
                }
            }
        }
    }
}

async fn publish(
    state: &AppState,
    tenant: &str,
    sent: &mut HashMap<String, Sent>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let now = chrono::Utc::now();
    let mut ranges = Vec::with_capacity(SUGGESTION_RANGES.len());
    let mut version = 0;
    for name in SUGGESTION_RANGES {
        let range = TimeRange::parse(Some(name), &SUGGESTION_RANGES, TimeRange::All)?;
        let (figures, v) = answer(state, tenant, range, now).await?;
        version = version.max(v);
        ranges.push((range, figures));
    }
    let previous = sent.get(tenant);
    let mut changes = Map::new();
    for (range, figures) in &ranges {
        let before =
            previous.and_then(|p| p.ranges.iter().find(|(r, _)| r == range).map(|(_, a)| a));
        let change = match before {
            Some(old) => figures.changes_since(old),
            None => figures.changes_since(&empty_like(figures)),
        };
        if let Some(c) = change {
            changes.insert(range.name().to_owned(), c);
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    let data = json!({
        "version": version,
        "base": previous.map_or(0, |p| p.version),
        "ranges": Value::Object(changes),
    });
    let tenant_id = TenantId::parse(tenant.to_owned())?;
    let room = RoomName::parse(ANALYTICS_ROOM)?;
    let event = pb::RoomEvent {
        id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
        tenant: tenant.to_owned(),
        room: ANALYTICS_ROOM.to_owned(),
        event: UPDATED.to_owned(),
        data: serde_json::to_vec(&data)?,
        source: crate::SERVICE.to_owned(),
        ts_unix_ms: now.timestamp_millis(),
        ..Default::default()
    };
    publish_room_event(&state.bus.jetstream, &tenant_id, &room, &event).await?;
    state.metrics.updates_published.inc();
    sent.insert(tenant.to_owned(), Sent { version, ranges });
    Ok(())
}

/// An answer every figure of `a` differs from, so that the first update
/// carries them all (zeros would hide figures that are zero).
fn empty_like(a: &Analytics) -> Analytics {
    Analytics {
        total_suggestions: u64::MAX,
        pending_count: u64::MAX,
        executed_count: u64::MAX,
        rejected_count: u64::MAX,
        paused_count: u64::MAX,
        total_revenue_estimate: f64::NAN,
        executed_revenue: f64::NAN,
        avg_confidence: f64::NAN,
        acceptance_rate: f64::NAN,
        by_agent_type: Vec::new(),
        by_priority: Vec::new(),
        timeline: if a.timeline.is_empty() {
            vec![crate::domain::figures::DayFigures {
                date: String::new(),
                count: 0,
                executed: 0,
                rejected: 0,
            }]
        } else {
            Vec::new()
        },
    }
}
