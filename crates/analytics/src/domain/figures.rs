//! The suggestions answer (DESIGN.md §4, exactly), assembled from the
//! projection's per-day cells, and what changed between two answers: the
//! data of `analytics.updated`, which a dashboard applies to stay exact.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ranges::days;

/// Priorities, in the order the answer lists them.
pub const PRIORITIES: [&str; 4] = ["critical", "high", "medium", "low"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analytics {
    pub total_suggestions: u64,
    pub pending_count: u64,
    pub executed_count: u64,
    pub rejected_count: u64,
    pub paused_count: u64,
    pub total_revenue_estimate: f64,
    pub executed_revenue: f64,
    pub avg_confidence: f64,
    pub acceptance_rate: f64,
    pub by_agent_type: Vec<AgentFigures>,
    pub by_priority: Vec<PriorityCount>,
    pub timeline: Vec<DayFigures>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentFigures {
    pub agent_type: String,
    pub count: u64,
    pub avg_confidence: f64,
    pub total_revenue: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorityCount {
    pub priority: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayFigures {
    pub date: String,
    pub count: u64,
    pub executed: u64,
    pub rejected: u64,
}

/// Sums over some suggestions (all of a range, or one agent type's, one
/// priority's, one day's): what the projection's aggregate query gives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub count: u64,
    pub pending: u64,
    pub executed: u64,
    pub rejected: u64,
    pub paused: u64,
    pub revenue: f64,
    pub executed_revenue: f64,
    pub confidence: f64,
}

/// The groups of a range: all of it, and by agent type, priority and day.
#[derive(Debug, Clone, Default)]
pub struct Groups {
    pub all: Totals,
    pub agents: Vec<(String, Totals)>,
    pub priorities: Vec<(String, Totals)>,
    pub days: Vec<(NaiveDate, Totals)>,
}

fn mean(sum: f64, count: u64) -> f64 {
    if count == 0 { 0.0 } else { sum / count as f64 }
}

impl Analytics {
    /// The answer over a range's `groups`, with a timeline from `first` to
    /// `last` (none when `first` is `None`: an `all` range of a tenant with
    /// no suggestion).
    pub fn assemble(groups: &Groups, first: Option<NaiveDate>, last: NaiveDate) -> Self {
        let t = &groups.all;
        let mut by_agent_type: Vec<AgentFigures> = groups
            .agents
            .iter()
            .filter(|(_, a)| a.count > 0)
            .map(|(agent, a)| AgentFigures {
                agent_type: agent.clone(),
                count: a.count,
                avg_confidence: mean(a.confidence, a.count),
                total_revenue: a.revenue,
            })
            .collect();
        sort_agents(&mut by_agent_type);
        let per_day: BTreeMap<NaiveDate, &Totals> =
            groups.days.iter().map(|(d, t)| (*d, t)).collect();
        let decided = t.executed + t.rejected;
        Self {
            total_suggestions: t.count,
            pending_count: t.pending,
            executed_count: t.executed,
            rejected_count: t.rejected,
            paused_count: t.paused,
            total_revenue_estimate: t.revenue,
            executed_revenue: t.executed_revenue,
            avg_confidence: mean(t.confidence, t.count),
            acceptance_rate: if decided == 0 {
                0.0
            } else {
                t.executed as f64 / decided as f64
            },
            by_agent_type,
            by_priority: PRIORITIES
                .iter()
                .map(|p| PriorityCount {
                    priority: (*p).to_owned(),
                    count: groups
                        .priorities
                        .iter()
                        .find(|(q, _)| q == p)
                        .map_or(0, |(_, t)| t.count),
                })
                .collect(),
            timeline: first
                .map(|first| {
                    days(first, last)
                        .map(|d| {
                            let z = Totals::default();
                            let t = per_day.get(&d).copied().unwrap_or(&z);
                            DayFigures {
                                date: d.format("%Y-%m-%d").to_string(),
                                count: t.count,
                                executed: t.executed,
                                rejected: t.rejected,
                            }
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// What changed from `old` (the answer a dashboard holds) to `self`:
    /// changed top-level figures by name; agent types set (whole entries)
    /// or removed; the four priorities when any changed; timeline rows set,
    /// and the timeline's first and last date. `None` when nothing did.
    pub fn changes_since(&self, old: &Analytics) -> Option<Value> {
        let new_v = serde_json::to_value(self).expect("figures serialize");
        let old_v = serde_json::to_value(old).expect("figures serialize");
        let mut out = Map::new();
        let mut figures = Map::new();
        for (k, v) in new_v.as_object().expect("an object") {
            if v.is_array() {
                continue;
            }
            if old_v.get(k) != Some(v) {
                figures.insert(k.clone(), v.clone());
            }
        }
        if !figures.is_empty() {
            out.insert("figures".into(), Value::Object(figures));
        }
        let set: Vec<&AgentFigures> = self
            .by_agent_type
            .iter()
            .filter(|a| !old.by_agent_type.contains(a))
            .collect();
        let remove: Vec<&str> = old
            .by_agent_type
            .iter()
            .filter(|o| {
                !self
                    .by_agent_type
                    .iter()
                    .any(|a| a.agent_type == o.agent_type)
            })
            .map(|o| o.agent_type.as_str())
            .collect();
        if !set.is_empty() || !remove.is_empty() {
            out.insert(
                "by_agent_type".into(),
                json!({"set": set, "remove": remove}),
            );
        }
        if self.by_priority != old.by_priority {
            out.insert("by_priority".into(), json!(self.by_priority));
        }
        let rows: Vec<&DayFigures> = self
            .timeline
            .iter()
            .filter(|d| !old.timeline.contains(d))
            .collect();
        let bounds = |t: &[DayFigures]| {
            (
                t.first().map(|d| d.date.clone()),
                t.last().map(|d| d.date.clone()),
            )
        };
        if !rows.is_empty() || bounds(&self.timeline) != bounds(&old.timeline) {
            let (from, to) = bounds(&self.timeline);
            out.insert(
                "timeline".into(),
                json!({"set": rows, "from": from, "to": to}),
            );
        }
        (!out.is_empty()).then_some(Value::Object(out))
    }

    /// Applies [`changes_since`](Self::changes_since)'s answer, as a
    /// dashboard does.
    pub fn apply(&mut self, change: &Value) {
        if let Some(f) = change.get("figures") {
            let mut v = serde_json::to_value(&*self).expect("figures serialize");
            for (k, x) in f.as_object().into_iter().flatten() {
                v[k] = x.clone();
            }
            *self = serde_json::from_value(v).expect("figures stay figures");
        }
        if let Some(a) = change.get("by_agent_type") {
            for name in a["remove"].as_array().into_iter().flatten() {
                self.by_agent_type
                    .retain(|x| Some(x.agent_type.as_str()) != name.as_str());
            }
            for entry in a["set"].as_array().into_iter().flatten() {
                let e: AgentFigures = serde_json::from_value(entry.clone()).expect("agent figures");
                self.by_agent_type.retain(|x| x.agent_type != e.agent_type);
                self.by_agent_type.push(e);
            }
            sort_agents(&mut self.by_agent_type);
        }
        if let Some(p) = change.get("by_priority") {
            self.by_priority = serde_json::from_value(p.clone()).expect("priorities");
        }
        if let Some(t) = change.get("timeline") {
            let mut rows: BTreeMap<String, DayFigures> = self
                .timeline
                .drain(..)
                .map(|d| (d.date.clone(), d))
                .collect();
            for r in t["set"].as_array().into_iter().flatten() {
                let d: DayFigures = serde_json::from_value(r.clone()).expect("a day");
                rows.insert(d.date.clone(), d);
            }
            let parse = |v: &Value| {
                v.as_str()
                    .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            };
            if let (Some(from), Some(to)) = (parse(&t["from"]), parse(&t["to"])) {
                self.timeline = days(from, to)
                    .map(|d| {
                        let date = d.format("%Y-%m-%d").to_string();
                        rows.remove(&date).unwrap_or(DayFigures {
                            date,
                            count: 0,
                            executed: 0,
                            rejected: 0,
                        })
                    })
                    .collect();
            } else {
                self.timeline.clear();
            }
        }
    }
}

/// Count descending, then name.
fn sort_agents(v: &mut [AgentFigures]) {
    v.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.agent_type.cmp(&b.agent_type))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups of single suggestions: (day, agent, priority, status, revenue, confidence).
    fn groups(items: &[(u32, &str, &str, &str, f64, f64)]) -> Groups {
        let mut g = Groups::default();
        let add = |t: &mut Totals, status: &str, rev: f64, conf: f64| {
            t.count += 1;
            t.revenue += rev;
            t.confidence += conf;
            match status {
                "pending" => t.pending += 1,
                "executed" => {
                    t.executed += 1;
                    t.executed_revenue += rev;
                }
                "rejected" => t.rejected += 1,
                _ => t.paused += 1,
            }
        };
        fn slot<'a, K: PartialEq + Clone>(v: &'a mut Vec<(K, Totals)>, k: &K) -> &'a mut Totals {
            if let Some(i) = v.iter().position(|(x, _)| x == k) {
                return &mut v[i].1;
            }
            v.push((k.clone(), Totals::default()));
            &mut v.last_mut().unwrap().1
        }
        for (day, agent, priority, status, rev, conf) in items {
            add(&mut g.all, status, *rev, *conf);
            add(slot(&mut g.agents, &agent.to_string()), status, *rev, *conf);
            add(
                slot(&mut g.priorities, &priority.to_string()),
                status,
                *rev,
                *conf,
            );
            let d = NaiveDate::from_ymd_opt(2026, 12, *day).unwrap();
            add(slot(&mut g.days, &d), status, *rev, *conf);
        }
        g
    }

    #[test]
    fn figures_follow_the_rules_and_changes_rebuild_the_answer() {
        let d = |n| NaiveDate::from_ymd_opt(2026, 12, n).unwrap();
        let before = Analytics::assemble(
            &groups(&[
                (2, "pricing", "high", "pending", 150.0, 0.75),
                (2, "pricing", "high", "pending", 150.0, 0.75),
                (4, "churn", "low", "executed", 100.0, 0.5),
            ]),
            Some(d(1)),
            d(5),
        );
        assert_eq!(before.total_suggestions, 3);
        assert_eq!(before.acceptance_rate, 1.0);
        assert_eq!(before.avg_confidence, 2.0 / 3.0);
        assert_eq!(before.timeline.len(), 5);
        assert_eq!(before.by_priority[0].priority, "critical");
        assert_eq!(before.by_agent_type[0].agent_type, "pricing");
        let after = Analytics::assemble(
            &groups(&[
                (2, "pricing", "high", "rejected", 150.0, 0.75),
                (2, "pricing", "high", "rejected", 150.0, 0.75),
                (6, "upsell", "critical", "pending", 50.0, 0.9),
            ]),
            Some(d(2)),
            d(6),
        );
        let change = after.changes_since(&before).unwrap();
        let mut applied = before.clone();
        applied.apply(&change);
        assert_eq!(applied, after);
        assert!(after.changes_since(&after).is_none());
        let empty = Analytics::assemble(&Groups::default(), None, d(6));
        assert_eq!((empty.avg_confidence, empty.acceptance_rate), (0.0, 0.0));
        assert!(empty.timeline.is_empty());
    }
}
