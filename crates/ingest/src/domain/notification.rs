//! Notification preferences and the quiet-hours rule: a notification for a
//! user inside their quiet hours is held until the hours end (in the user's
//! IANA time zone, daylight saving included), never dropped.

use chrono::{DateTime, LocalResult, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_platform::problem::Invalid;

use super::fields::Fields;
use super::suggestion::{AGENT_TYPE_RULE, PRIORITY_RULE, Priority, valid_agent_type};

pub const CHANNELS: &[&str] = &["websocket", "email", "push", "sms"];
pub const CHANNELS_RULE: &str =
    "must be a list of distinct channels from websocket, email, push, sms";
pub const AGENT_TYPES_RULE: &str = "must be a list of agent types (empty = all)";
pub const QUIET_HOURS_RULE: &str = "must be null or an object {start, end, tz}";
pub const TIME_RULE: &str = "must be a time of day as HH:MM (00:00 to 23:59)";
pub const TZ_RULE: &str = "must be an IANA time zone name, e.g. America/New_York";
pub const END_RULE: &str = "must differ from start";

/// What is stored (as JSON) and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preferences {
    pub channels: Vec<String>,
    pub min_priority: String,
    pub agent_types: Vec<String>,
    pub quiet_hours: Option<QuietHours>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuietHours {
    pub start: String,
    pub end: String,
    pub tz: String,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            channels: vec!["websocket".into()],
            min_priority: "low".into(),
            agent_types: Vec::new(),
            quiet_hours: None,
        }
    }
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    if s.len() != 5 || s.as_bytes()[2] != b':' {
        return None;
    }
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

impl Preferences {
    /// A `PUT` body: every field is optional and a missing one takes its
    /// default (the body replaces the preferences as a whole).
    pub fn parse(body: &Value) -> Result<Self, Invalid> {
        let f = Fields::object(
            body,
            "",
            "",
            &["channels", "min_priority", "agent_types", "quiet_hours"],
        )?;
        let mut prefs = Self::default();
        if f.get("channels").is_some() {
            let list = f.array("channels", CHANNELS_RULE)?;
            let mut channels = Vec::with_capacity(list.len());
            for (i, c) in list.iter().enumerate() {
                match c.as_str() {
                    Some(c) if CHANNELS.contains(&c) && !channels.iter().any(|x| x == c) => {
                        channels.push(c.to_owned())
                    }
                    _ => return Err(Invalid::new(format!("channels[{i}]"), CHANNELS_RULE)),
                }
            }
            prefs.channels = channels;
        }
        if let Some(p) = f.opt_str("min_priority", PRIORITY_RULE)? {
            let p = Priority::parse(p).ok_or_else(|| f.invalid("min_priority", PRIORITY_RULE))?;
            prefs.min_priority = p.as_str().to_owned();
        }
        if f.get("agent_types").is_some() {
            let list = f.array("agent_types", AGENT_TYPES_RULE)?;
            if list.len() > 100 {
                return Err(f.invalid("agent_types", "must hold at most 100 agent types"));
            }
            let mut types = Vec::with_capacity(list.len());
            for (i, t) in list.iter().enumerate() {
                match t.as_str() {
                    Some(t) if valid_agent_type(t) => types.push(t.to_owned()),
                    _ => {
                        return Err(Invalid::new(format!("agent_types[{i}]"), AGENT_TYPE_RULE));
                    }
                }
            }
            prefs.agent_types = types;
        }
        if let Some(q) = f.get("quiet_hours") {
            let q = Fields::object(q, "quiet_hours.", "quiet_hours", &["start", "end", "tz"])?;
            let start = q.str("start", TIME_RULE)?;
            let start_t = parse_time(start).ok_or_else(|| q.invalid("start", TIME_RULE))?;
            let end = q.str("end", TIME_RULE)?;
            let end_t = parse_time(end).ok_or_else(|| q.invalid("end", TIME_RULE))?;
            if start_t == end_t {
                return Err(q.invalid("end", END_RULE));
            }
            let tz = q.str("tz", TZ_RULE)?;
            let zone: Tz = tz.parse().map_err(|_| q.invalid("tz", TZ_RULE))?;
            prefs.quiet_hours = Some(QuietHours {
                start: start.to_owned(),
                end: end.to_owned(),
                tz: zone.name().to_owned(),
            });
        }
        Ok(prefs)
    }

    pub fn min_priority(&self) -> Priority {
        Priority::parse(&self.min_priority).unwrap_or(Priority::Low)
    }

    /// Whether a new suggestion of this priority and agent type notifies.
    pub fn wants_suggestion(&self, priority: Priority, agent_type: &str) -> bool {
        priority >= self.min_priority()
            && (self.agent_types.is_empty() || self.agent_types.iter().any(|t| t == agent_type))
    }

    pub fn websocket(&self) -> bool {
        self.channels.iter().any(|c| c == "websocket")
    }

    /// When a notification created at `now` may be delivered: `None` at once,
    /// or the end of the quiet hours `now` falls in.
    pub fn held_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.quiet_hours.as_ref()?.held_until(now)
    }
}

impl QuietHours {
    pub fn held_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = parse_time(&self.start)?;
        let end = parse_time(&self.end)?;
        let tz: Tz = self.tz.parse().ok()?;
        let local = now.with_timezone(&tz);
        let t = local.time();
        let inside = if start < end {
            t >= start && t < end
        } else {
            t >= start || t < end
        };
        if !inside {
            return None;
        }
        // The end is later today, or (for hours across midnight, once past
        // the start) tomorrow.
        let mut day = local.date_naive();
        if t >= end {
            day = day.succ_opt()?;
        }
        let mut naive = day.and_time(end);
        // A local end time that does not exist (skipped by a DST change)
        // ends the hours at the first local time that does.
        for _ in 0..4 {
            match tz.from_local_datetime(&naive) {
                LocalResult::Single(at) => return Some(at.with_timezone(&Utc)),
                LocalResult::Ambiguous(first, _) => return Some(first.with_timezone(&Utc)),
                LocalResult::None => naive += chrono::Duration::minutes(30),
            }
        }
        None
    }
}

pub const MESSAGE_RULE: &str = "must be 1 to 2000 characters, not blank";
pub const SEVERITY_RULE: &str = "must be one of info, warning, critical";
pub const SEVERITIES: &[&str] = &["info", "warning", "critical"];

/// `POST …/users/{user}/notifications` body, checked.
pub struct NewNotification {
    pub message: String,
    pub severity: String,
    pub data: Value,
}

impl NewNotification {
    pub fn parse(body: &Value, max_data_bytes: usize) -> Result<Self, Invalid> {
        let f = Fields::object(body, "", "", &["message", "severity", "data"])?;
        let message = f.str("message", MESSAGE_RULE)?;
        super::fields::text(&f, "message", message, 1, 2000, MESSAGE_RULE)?;
        let severity = f.str("severity", SEVERITY_RULE)?;
        if !SEVERITIES.contains(&severity) {
            return Err(f.invalid("severity", SEVERITY_RULE));
        }
        let data = f.get("data").cloned().unwrap_or(Value::Null);
        let size = serde_json::to_vec(&data).map(|v| v.len()).unwrap_or(0);
        if size > max_data_bytes {
            return Err(f.invalid(
                "data",
                format!("must be at most {max_data_bytes} bytes of JSON (was {size})"),
            ));
        }
        Ok(Self {
            message: message.to_owned(),
            severity: severity.to_owned(),
            data,
        })
    }
}

/// The severity of the notification a new suggestion gives.
pub fn severity_of(priority: Priority) -> &'static str {
    match priority {
        Priority::Critical => "critical",
        Priority::High => "warning",
        Priority::Medium | Priority::Low => "info",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet(start: &str, end: &str, tz: &str) -> QuietHours {
        QuietHours {
            start: start.into(),
            end: end.into(),
            tz: tz.into(),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn hours_across_midnight_hold_until_the_local_morning() {
        let q = quiet("22:00", "07:00", "America/New_York");
        // 03:00 in New York (EST, UTC-5) is 08:00 UTC.
        assert_eq!(
            q.held_until(at("2026-01-15T08:00:00Z")),
            Some(at("2026-01-15T12:00:00Z"))
        );
        // 23:00 the evening before ends at 07:00 the next morning.
        assert_eq!(
            q.held_until(at("2026-01-15T04:00:00Z")),
            Some(at("2026-01-15T12:00:00Z"))
        );
        // Noon is outside.
        assert_eq!(q.held_until(at("2026-01-15T17:00:00Z")), None);
    }

    #[test]
    fn daytime_hours_and_a_skipped_end_time() {
        let q = quiet("12:00", "13:00", "UTC");
        assert_eq!(
            q.held_until(at("2026-01-15T12:30:00Z")),
            Some(at("2026-01-15T13:00:00Z"))
        );
        assert_eq!(q.held_until(at("2026-01-15T13:00:00Z")), None);
        // 02:30 does not exist in New York on 2026-03-08.
        let q = quiet("01:00", "02:30", "America/New_York");
        assert_eq!(
            q.held_until(at("2026-03-08T06:30:00Z")),
            Some(at("2026-03-08T07:00:00Z"))
        );
    }

    #[test]
    fn preferences_name_the_bad_field() {
        let p = Preferences::parse(
            &serde_json::json!({"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "Mars/Base"}}),
        );
        assert_eq!(p.unwrap_err().field, "quiet_hours.tz");
        let p = Preferences::parse(&serde_json::json!({})).unwrap();
        assert_eq!(p, Preferences::default());
    }
}
