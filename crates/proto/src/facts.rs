//! The data of the domain events services read from one another
//! (`DomainEvent.data`, JSON), and of the statistics gateways report: one
//! definition for the writer and the readers, so that they agree.
//!
//! A fact carries the whole of what it is about as it now is, not a change:
//! a reader applies it with "the newest wins" (by `updated_at` or its own
//! clock), so redelivered, repeated or reordered facts land the same.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `suggestion.created` / `suggestion.updated` (ingest): the suggestion as it
/// now is. Times are RFC 3339 (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuggestionFact {
    pub id: String,
    pub agent_type: String,
    pub priority: String,
    pub status: String,
    pub estimated_revenue: f64,
    pub confidence_score: f64,
    pub created_at: String,
    pub updated_at: String,
}

/// `connection.opened` / `connection.closed` (room-gateway).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionFact {
    pub conn_id: String,
    pub sub: String,
    pub ip: String,
    pub user_agent: String,
    pub opened_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_code: Option<u16>,
}

/// Names of the task domain events (workflow-orchestrator).
pub const TASK_EVENTS: [&str; 6] = [
    "task.created",
    "task.started",
    "task.progress",
    "task.completed",
    "task.failed",
    "task.cancelled",
];

/// Every `task.*` domain event (workflow-orchestrator): the task as it now
/// is. `updated_at_ms` orders them (the newest wins); a finished task has
/// `finished_at_ms`, and `duration_ms` from its start to its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFact {
    pub task_id: String,
    pub workflow: String,
    /// The agent (worker kind, model…) that did the work, if one did.
    #[serde(default)]
    pub agent: Option<String>,
    /// `pending`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub created_at_ms: i64,
    #[serde(default)]
    pub started_at_ms: Option<i64>,
    #[serde(default)]
    pub finished_at_ms: Option<i64>,
    pub updated_at_ms: i64,
    #[serde(default)]
    pub tokens: u64,
    #[serde(default)]
    pub cost: f64,
}

/// What a gateway reports on `sb.stats.gateway.{gateway}` (core NATS, every
/// [`STATS_INTERVAL_MS`]): its totals since it started, and each tenant's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayStats {
    pub gateway: String,
    pub at_ms: i64,
    pub started_at_ms: i64,
    pub connections: u64,
    pub rooms: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub slow_consumer_closes: u64,
    pub tenants: BTreeMap<String, TenantStats>,
    /// Its last report: it is stopping (not an outage).
    #[serde(default)]
    pub stopping: bool,
}

/// One tenant's share of a gateway's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantStats {
    pub connections: u64,
    pub rooms: u64,
    pub frames_in: u64,
    pub frames_out: u64,
}

/// How often gateways report their statistics.
pub const STATS_INTERVAL_MS: i64 = 1_000;
