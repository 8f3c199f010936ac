//! The tasks answer (`GET …/analytics/tasks`): the orchestrator's tasks
//! created in a range, by status, workflow and agent, their durations,
//! success rate, tokens and cost, and a timeline of hourly or daily
//! buckets with the empty ones included.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use switchboard_platform::problem::Invalid;

use super::ranges::{TimeRange, day_start, hour_start};

pub const STATUSES: [&str; 5] = ["pending", "running", "completed", "failed", "cancelled"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    /// `bucket` of a request; by default hours for `24h`, days otherwise.
    pub fn parse(value: Option<&str>, range: TimeRange) -> Result<Self, Invalid> {
        match value.filter(|v| !v.is_empty()) {
            None if range == TimeRange::Hours24 => Ok(Self::Hour),
            None => Ok(Self::Day),
            Some("hour") => Ok(Self::Hour),
            Some("day") => Ok(Self::Day),
            Some(_) => Err(Invalid::new("bucket", "must be one of hour, day")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Self::Hour => hour_start(t),
            Self::Day => day_start(t.date_naive()),
        }
    }

    fn step(self) -> Duration {
        match self {
            Self::Hour => Duration::hours(1),
            Self::Day => Duration::days(1),
        }
    }
}

/// One task, as far as the answer needs it.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub workflow: String,
    pub agent: Option<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub duration_ms: Option<i64>,
    pub tokens: i64,
    pub cost: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskAnalytics {
    pub time_range: &'static str,
    pub bucket: &'static str,
    pub total: u64,
    pub by_status: std::collections::BTreeMap<&'static str, u64>,
    /// completed / (completed + failed); 0 when neither.
    pub success_rate: f64,
    /// Over tasks that finished with a duration; 0 when none did.
    pub duration_ms: Percentiles,
    pub tokens: u64,
    pub cost: f64,
    pub by_workflow: Vec<Group>,
    pub by_agent: Vec<Group>,
    pub timeline: Vec<TaskBucket>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    pub name: String,
    pub count: u64,
    pub completed: u64,
    pub failed: u64,
    pub tokens: u64,
    pub cost: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskBucket {
    pub start: DateTime<Utc>,
    pub count: u64,
    pub completed: u64,
    pub failed: u64,
}

/// The nearest-rank percentile `q` of sorted `v` (0 when empty).
fn percentile(v: &[i64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1] as f64
}

fn group(rows: &[&TaskRow], name: String) -> Group {
    Group {
        name,
        count: rows.len() as u64,
        completed: rows.iter().filter(|r| r.status == "completed").count() as u64,
        failed: rows.iter().filter(|r| r.status == "failed").count() as u64,
        tokens: rows.iter().map(|r| r.tokens.max(0) as u64).sum(),
        cost: rows.iter().map(|r| r.cost).sum(),
    }
}

fn groups(rows: &[TaskRow], key: impl Fn(&TaskRow) -> Option<&str>) -> Vec<Group> {
    let mut by: std::collections::BTreeMap<&str, Vec<&TaskRow>> = Default::default();
    for r in rows {
        if let Some(k) = key(r) {
            by.entry(k).or_default().push(r);
        }
    }
    let mut out: Vec<Group> = by
        .into_iter()
        .map(|(k, rs)| group(&rs, k.to_owned()))
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    out
}

impl TaskAnalytics {
    /// The answer over the tasks created in the range (`rows`), with buckets
    /// from `first` (the range's start, or the first task's) to `now`.
    pub fn assemble(
        rows: &[TaskRow],
        range: TimeRange,
        bucket: Bucket,
        first: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut by_status: std::collections::BTreeMap<&'static str, u64> =
            STATUSES.iter().map(|s| (*s, 0)).collect();
        for r in rows {
            if let Some(s) = STATUSES.iter().find(|s| **s == r.status) {
                *by_status.get_mut(s).expect("every status is listed") += 1;
            }
        }
        let (completed, failed) = (by_status["completed"], by_status["failed"]);
        let mut durations: Vec<i64> = rows.iter().filter_map(|r| r.duration_ms).collect();
        durations.sort_unstable();
        let mut timeline = Vec::new();
        if let Some(first) = first {
            let mut start = bucket.floor(first);
            let end = bucket.floor(now);
            while start <= end {
                let next = start + bucket.step();
                let inside: Vec<&TaskRow> = rows
                    .iter()
                    .filter(|r| r.created_at >= start && r.created_at < next)
                    .collect();
                let g = group(&inside, String::new());
                timeline.push(TaskBucket {
                    start,
                    count: g.count,
                    completed: g.completed,
                    failed: g.failed,
                });
                start = next;
            }
        }
        Self {
            time_range: range.name(),
            bucket: bucket.name(),
            total: rows.len() as u64,
            success_rate: if completed + failed == 0 {
                0.0
            } else {
                completed as f64 / (completed + failed) as f64
            },
            by_status,
            duration_ms: Percentiles {
                p50: percentile(&durations, 0.50),
                p95: percentile(&durations, 0.95),
                p99: percentile(&durations, 0.99),
            },
            tokens: rows.iter().map(|r| r.tokens.max(0) as u64).sum(),
            cost: rows.iter().map(|r| r.cost).sum(),
            by_workflow: groups(rows, |r| Some(r.workflow.as_str())),
            by_agent: groups(rows, |r| r.agent.as_deref()),
            timeline,
        }
    }
}
