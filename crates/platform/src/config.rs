//! Reading `SB_*` variables. A bad value is an error naming the variable and
//! the rule; nothing falls back silently.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("configuration: {var}={value:?} is invalid: {rule}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub rule: String,
}

/// Where variables come from: the process environment, or a map in tests.
pub trait Source {
    fn get(&self, var: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, var: &str) -> Option<String> {
        std::env::var(var).ok().filter(|v| !v.is_empty())
    }
}

impl Source for std::collections::HashMap<String, String> {
    fn get(&self, var: &str) -> Option<String> {
        std::collections::HashMap::get(self, var).cloned()
    }
}

pub fn string(src: &dyn Source, var: &str, default: &str) -> String {
    src.get(var).unwrap_or_else(|| default.to_owned())
}

pub fn parsed<T: FromStr>(
    src: &dyn Source,
    var: &str,
    default: T,
    rule: &str,
) -> Result<T, ConfigError> {
    match src.get(var) {
        None => Ok(default),
        Some(value) => value.parse().map_err(|_| ConfigError {
            var: var.into(),
            value,
            rule: rule.into(),
        }),
    }
}

/// `true` or `false` (also `1`/`0`), `default` when unset.
pub fn boolean(src: &dyn Source, var: &str, default: bool) -> Result<bool, ConfigError> {
    match src.get(var).as_deref() {
        None => Ok(default),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(ConfigError {
            var: var.into(),
            value: other.into(),
            rule: "true or false".into(),
        }),
    }
}

/// A whole number of at least `min`; `rule` says so in the error.
pub fn at_least<T>(
    src: &dyn Source,
    var: &str,
    default: T,
    min: T,
    rule: &str,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + ToString,
{
    let v = parsed(src, var, default, rule)?;
    if v < min {
        return Err(ConfigError {
            var: var.into(),
            value: v.to_string(),
            rule: rule.into(),
        });
    }
    Ok(v)
}

/// The largest `data` of one event, in bytes of its JSON
/// (`SB_MAX_EVENT_BYTES`): one limit for every way an event enters (ingest's
/// HTTP API and a gateway's client `publish`).
pub fn max_event_bytes(src: &dyn Source) -> Result<usize, ConfigError> {
    at_least(
        src,
        "SB_MAX_EVENT_BYTES",
        DEFAULT_MAX_EVENT_BYTES,
        1,
        "a whole number of bytes, at least 1",
    )
}

pub const DEFAULT_MAX_EVENT_BYTES: usize = 60 * 1024;

pub fn listen(src: &dyn Source, default: &str) -> Result<SocketAddr, ConfigError> {
    let value = string(src, "SB_LISTEN", default);
    value.parse().map_err(|_| ConfigError {
        var: "SB_LISTEN".into(),
        value,
        rule: "a host:port such as 127.0.0.1:8080".into(),
    })
}

/// Durations are written as a number with a unit: `500ms`, `10s`, `5m`, `24h`.
pub fn duration(src: &dyn Source, var: &str, default: Duration) -> Result<Duration, ConfigError> {
    match src.get(var) {
        None => Ok(default),
        Some(value) => parse_duration(&value).ok_or_else(|| ConfigError {
            var: var.into(),
            value,
            rule: "a number with a unit: ms, s, m, h or d (e.g. 24h)".into(),
        }),
    }
}

/// A duration that must be longer than zero (an interval a timer runs on).
pub fn positive_duration(
    src: &dyn Source,
    var: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let d = duration(src, var, default)?;
    if d.is_zero() {
        return Err(ConfigError {
            var: var.into(),
            value: src.get(var).unwrap_or_default(),
            rule: "a duration longer than zero, with a unit: ms, s, m, h or d (e.g. 10s)".into(),
        });
    }
    Ok(d)
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => return Some(Duration::from_millis(n)),
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// The admin token: required where it is used, never defaulted, and long
/// enough that guessing it is hopeless.
pub fn admin_token(src: &dyn Source) -> Result<Option<String>, ConfigError> {
    match src.get("SB_ADMIN_TOKEN") {
        None => Ok(None),
        Some(t) if t.len() >= 32 => Ok(Some(t)),
        Some(_) => Err(ConfigError {
            var: "SB_ADMIN_TOKEN".into(),
            value: "<hidden>".into(),
            rule: "at least 32 characters of random text (scripts/up generates one)".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("150ms"), Some(Duration::from_millis(150)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("h"), None);
    }
}
