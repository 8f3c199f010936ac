//! Validated names: tenants, rooms, events and room patterns. Each rule is the
//! one of DESIGN.md §2 and each error names the rule, so callers can tell the
//! user exactly what to fix.

use std::fmt;

/// A name that broke its rule; `rule` is shown to users as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {value:?} does not match {rule}")]
pub struct NameError {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

pub const TENANT_RULE: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";
pub const ROOM_RULE: &str = "^[A-Za-z0-9_:@=-]{1,128}$";
pub const EVENT_RULE: &str = "^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*){0,3}$";
pub const PATTERN_RULE: &str = "a room name, optionally ending in '*' (e.g. quote:*)";
pub const EVENT_FILTER_RULE: &str =
    "an event name, optionally with '*' as the last segment (e.g. task.*)";

fn is_tenant(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

fn is_room_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b':' | b'@' | b'=' | b'-')
}

fn is_room(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(is_room_char)
}

fn is_event_segment(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

fn is_event(s: &str) -> bool {
    let mut n = 0;
    for seg in s.split('.') {
        n += 1;
        if n > 4 || !is_event_segment(seg) {
            return false;
        }
    }
    true
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $rule:expr, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                if $check(&value) {
                    Ok(Self(value))
                } else {
                    Err(NameError { kind: $kind, value, rule: $rule })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, NameError> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A tenant id: one NATS subject token, lower case.
    TenantId, "tenant", TENANT_RULE, is_tenant
);
name_type!(
    /// A room name: exactly one NATS subject token (no `.`, `*`, `>`, spaces).
    RoomName, "room", ROOM_RULE, is_room
);
name_type!(
    /// An event name such as `suggestion.created`: up to four dotted segments.
    EventName, "event", EVENT_RULE, is_event
);

fn is_pattern(s: &str) -> bool {
    match s.strip_suffix('*') {
        Some(prefix) => prefix.is_empty() || is_room(prefix),
        None => is_room(s),
    }
}

name_type!(
    /// A room pattern of a token's `rooms` claim: a room name, or a prefix
    /// ending in `*` that matches every room starting with it.
    RoomPattern, "room pattern", PATTERN_RULE, is_pattern
);

impl RoomPattern {
    pub fn matches(&self, room: &RoomName) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => room.as_str().starts_with(prefix),
            None => self.0 == room.as_str(),
        }
    }

    /// How specific the pattern is: an exact name beats any prefix, a longer
    /// prefix beats a shorter one.
    pub fn specificity(&self) -> usize {
        match self.0.strip_suffix('*') {
            Some(prefix) => prefix.len(),
            None => usize::MAX,
        }
    }
}

fn is_event_filter(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    match s.strip_suffix(".*") {
        Some(prefix) => is_event(prefix) && prefix.split('.').count() < 4,
        None => is_event(s),
    }
}

name_type!(
    /// An event-name filter of `join`/`filter`: an event name, or a prefix
    /// ending in `.*` (or `*` alone for every event).
    EventFilter, "event filter", EVENT_FILTER_RULE, is_event_filter
);

impl EventFilter {
    pub fn matches(&self, event: &str) -> bool {
        if self.0 == "*" {
            return true;
        }
        match self.0.strip_suffix('*') {
            Some(prefix) => event.starts_with(prefix),
            None => self.0 == event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_rule_accepts_and_rejects() {
        assert!(TenantId::parse("acme").is_ok());
        assert!(TenantId::parse("a-1_b").is_ok());
        assert!(TenantId::parse("a".repeat(63)).is_ok());
        for bad in ["", "Acme", "-a", "a.b", "a b", "a*", &"a".repeat(64)] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn room_rule_is_one_subject_token() {
        for ok in ["lobby", "user:42", "a@b=c-d_e", &"r".repeat(128)] {
            assert!(RoomName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a.b", "a*", "a>", "a b", "é", &"r".repeat(129)] {
            assert!(RoomName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_rule_allows_four_segments() {
        for ok in ["a", "suggestion.created", "a.b.c.d", "x_1.y2"] {
            assert!(EventName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "1a", "a.b.c.d.e", "a..b", "a.", ".a", "a-b", "a.*"] {
            assert!(EventName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_match_prefixes_and_exact_names() {
        let room = RoomName::parse("quote:42").unwrap();
        assert!(RoomPattern::parse("quote:*").unwrap().matches(&room));
        assert!(RoomPattern::parse("*").unwrap().matches(&room));
        assert!(RoomPattern::parse("quote:42").unwrap().matches(&room));
        assert!(!RoomPattern::parse("quote:4").unwrap().matches(&room));
        assert!(RoomPattern::parse("a.b*").is_err());
    }

    #[test]
    fn event_filters() {
        let f = EventFilter::parse("task.*").unwrap();
        assert!(f.matches("task.progress"));
        assert!(!f.matches("tasks.progress"));
        assert!(EventFilter::parse("*").unwrap().matches("x"));
        assert!(
            EventFilter::parse("task.created")
                .unwrap()
                .matches("task.created")
        );
        assert!(EventFilter::parse("task*").is_err());
    }
}
