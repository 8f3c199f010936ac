//! Suggestions from agents (DESIGN.md §4): the fields and their rules, the
//! statuses and which response moves a suggestion from which status.

use chrono::{DateTime, Utc};
use serde_json::Value;
use switchboard_platform::problem::Invalid;
use switchboard_proto::RoomName;

use super::fields::{Fields, text};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Low,
    Medium,
    High,
    Critical,
}

pub const PRIORITY_RULE: &str = "must be one of low, medium, high, critical";

impl Priority {
    pub const ALL: [Self; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Executed,
    Rejected,
    Paused,
}

pub const STATUS_RULE: &str = "must be one of pending, executed, rejected, paused";

impl Status {
    pub const ALL: [Self; 4] = [Self::Pending, Self::Executed, Self::Rejected, Self::Paused];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Executed => "executed",
            Self::Rejected => "rejected",
            Self::Paused => "paused",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Execute,
    Reject,
    Pause,
    Resume,
}

pub const ACTION_RULE: &str = "must be one of execute, reject, pause, resume";

impl Action {
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Execute, Self::Reject, Self::Pause, Self::Resume]
            .into_iter()
            .find(|a| a.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Execute => "execute",
            Self::Reject => "reject",
            Self::Pause => "pause",
            Self::Resume => "resume",
        }
    }

    /// The status this response leads to.
    pub fn target(self) -> Status {
        match self {
            Self::Execute => Status::Executed,
            Self::Reject => Status::Rejected,
            Self::Pause => Status::Paused,
            Self::Resume => Status::Pending,
        }
    }

    /// The statuses this response may be given in. Executed and rejected are
    /// final; a paused suggestion may still be executed or rejected.
    pub fn allowed_from(self) -> &'static [Status] {
        match self {
            Self::Execute | Self::Reject => &[Status::Pending, Status::Paused],
            Self::Pause => &[Status::Pending],
            Self::Resume => &[Status::Paused],
        }
    }
}

pub const USER_ID_RULE: &str =
    "must be 1 to 123 characters of A-Z a-z 0-9 _ : @ = - (it names room user:{user_id})";

/// A user id, valid exactly when `user:{id}` is a valid room name.
pub fn parse_user_id(id: &str) -> Option<RoomName> {
    if id.is_empty() {
        return None;
    }
    RoomName::parse(format!("user:{id}")).ok()
}

pub const AGENT_TYPE_RULE: &str = "must be 1 to 100 characters, not blank, no control characters";
pub const TITLE_RULE: &str = "must be 1 to 200 characters, not blank";
pub const DESCRIPTION_RULE: &str = "must be a string of at most 10000 characters";
pub const REVENUE_RULE: &str = "must be a number >= 0";
pub const CONFIDENCE_RULE: &str = "must be a number from 0 to 1";
pub const CREATED_AT_RULE: &str = "must be an RFC 3339 timestamp, not in the future";
pub const BATCH_ID_RULE: &str = "must be 1 to 128 characters of A-Z a-z 0-9 _ - . :";

pub fn valid_agent_type(s: &str) -> bool {
    let n = s.chars().count();
    (1..=100).contains(&n) && !s.trim().is_empty() && !s.chars().any(char::is_control)
}

pub fn valid_batch_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

/// One posted suggestion, checked.
#[derive(Debug, Clone)]
pub struct NewSuggestion {
    pub agent_type: String,
    pub title: String,
    pub description: String,
    pub estimated_revenue: f64,
    pub confidence_score: f64,
    pub priority: Priority,
    pub user_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

const FIELDS: &[&str] = &[
    "agent_type",
    "title",
    "description",
    "estimated_revenue",
    "confidence_score",
    "priority",
    "user_id",
    "created_at",
];

impl NewSuggestion {
    /// `prefix` is where the suggestion sits in the body (`suggestions[2].`).
    pub fn parse(value: &Value, prefix: &str, now: DateTime<Utc>) -> Result<Self, Invalid> {
        let whole = prefix.trim_end_matches('.');
        let f = Fields::object(value, prefix, whole, FIELDS)?;
        let agent_type = f.str("agent_type", AGENT_TYPE_RULE)?;
        if !valid_agent_type(agent_type) {
            return Err(f.invalid("agent_type", AGENT_TYPE_RULE));
        }
        let title = f.str("title", TITLE_RULE)?;
        text(&f, "title", title, 1, 200, TITLE_RULE)?;
        let description = f.opt_str("description", DESCRIPTION_RULE)?.unwrap_or("");
        text(&f, "description", description, 0, 10_000, DESCRIPTION_RULE)?;
        let estimated_revenue = f.f64("estimated_revenue", REVENUE_RULE)?;
        if estimated_revenue < 0.0 {
            return Err(f.invalid("estimated_revenue", REVENUE_RULE));
        }
        let confidence_score = f.f64("confidence_score", CONFIDENCE_RULE)?;
        if !(0.0..=1.0).contains(&confidence_score) {
            return Err(f.invalid("confidence_score", CONFIDENCE_RULE));
        }
        let priority = Priority::parse(f.str("priority", PRIORITY_RULE)?)
            .ok_or_else(|| f.invalid("priority", PRIORITY_RULE))?;
        let user_id = match f.opt_str("user_id", USER_ID_RULE)? {
            None => None,
            Some(u) if parse_user_id(u).is_some() => Some(u.to_owned()),
            Some(_) => return Err(f.invalid("user_id", USER_ID_RULE)),
        };
        let created_at = match f.opt_str("created_at", CREATED_AT_RULE)? {
            None => None,
            Some(s) => {
                let at = DateTime::parse_from_rfc3339(s)
                    .map_err(|_| f.invalid("created_at", CREATED_AT_RULE))?
                    .with_timezone(&Utc);
                if at > now {
                    return Err(f.invalid("created_at", CREATED_AT_RULE));
                }
                DateTime::from_timestamp_micros(at.timestamp_micros())
            }
        };
        Ok(Self {
            agent_type: agent_type.to_owned(),
            title: title.to_owned(),
            description: description.to_owned(),
            estimated_revenue,
            confidence_score,
            priority,
            user_id,
            created_at,
        })
    }
}

/// The position after the last item of a page: opaque to clients.
pub mod cursor {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use chrono::{DateTime, Utc};

    pub const RULE: &str = "must be a next_cursor from a previous page of this list";

    pub fn encode(at: DateTime<Utc>, id: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}|{id}", at.timestamp_micros()))
    }

    pub fn decode(s: &str) -> Option<(DateTime<Utc>, String)> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let (micros, id) = raw.split_once('|')?;
        let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        (!id.is_empty()).then(|| (at, id.to_owned()))
    }

    /// A list page, `{"items", "next_cursor"}`, from up to `limit + 1` rows
    /// read after the previous cursor: the extra row only says whether
    /// another page follows.
    pub fn page<T>(
        mut rows: Vec<T>,
        limit: i64,
        position: impl Fn(&T) -> (DateTime<Utc>, &str),
        to_json: impl Fn(&T) -> serde_json::Value,
    ) -> serde_json::Value {
        let next = if rows.len() as i64 > limit {
            rows.truncate(limit.max(0) as usize);
            rows.last().map(|r| {
                let (at, id) = position(r);
                encode(at, id)
            })
        } else {
            None
        };
        let items: Vec<serde_json::Value> = rows.iter().map(to_json).collect();
        serde_json::json!({"items": items, "next_cursor": next})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_take_no_response() {
        for a in [
            Action::Execute,
            Action::Reject,
            Action::Pause,
            Action::Resume,
        ] {
            assert!(!a.allowed_from().contains(&Status::Executed));
            assert!(!a.allowed_from().contains(&Status::Rejected));
        }
        assert_eq!(Action::Resume.target(), Status::Pending);
    }

    #[test]
    fn cursors_round_trip() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let c = cursor::encode(at, "sug_1");
        assert_eq!(cursor::decode(&c), Some((at, "sug_1".to_owned())));
        assert_eq!(cursor::decode("!!"), None);
    }
}
