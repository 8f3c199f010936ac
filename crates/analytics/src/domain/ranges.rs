//! Time ranges (DESIGN.md §4): `Nd` is the last N UTC calendar days
//! including today, from 00:00 UTC of today − (N−1) days; `all` runs from
//! the first item's day; `24h` (tasks only) the last 24 hours in hours.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Timelike, Utc};
use switchboard_platform::problem::Invalid;

/// The ranges the suggestions answer takes.
pub const SUGGESTION_RANGES: [&str; 4] = ["7d", "30d", "90d", "all"];
/// The ranges the tasks answer takes.
pub const TASK_RANGES: [&str; 5] = ["24h", "7d", "30d", "90d", "all"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeRange {
    Hours24,
    Days(u32),
    All,
}

impl TimeRange {
    /// `time_range` of a request: `default` when absent; an unknown value
    /// names the allowed ones.
    pub fn parse(value: Option<&str>, allowed: &[&str], default: Self) -> Result<Self, Invalid> {
        let Some(v) = value.filter(|v| !v.is_empty()) else {
            return Ok(default);
        };
        let parsed = match v {
            "24h" => Some(Self::Hours24),
            "7d" => Some(Self::Days(7)),
            "30d" => Some(Self::Days(30)),
            "90d" => Some(Self::Days(90)),
            "all" => Some(Self::All),
            _ => None,
        };
        match parsed {
            Some(r) if allowed.contains(&r.name()) => Ok(r),
            _ => Err(Invalid::new(
                "time_range",
                format!("must be one of {}", allowed.join(", ")),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hours24 => "24h",
            Self::Days(7) => "7d",
            Self::Days(30) => "30d",
            Self::Days(90) => "90d",
            Self::Days(_) => "days",
            Self::All => "all",
        }
    }

    /// When the range starts at `now` (`None`: from the first item).
    pub fn start(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Hours24 => Some(hour_start(now) - Duration::hours(23)),
            Self::Days(n) => Some(day_start(now.date_naive()) - Duration::days(i64::from(n) - 1)),
            Self::All => None,
        }
    }
}

/// 00:00 UTC of `day`.
pub fn day_start(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

/// The start of the hour of `t`.
pub fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .expect("the start of an hour exists")
}

/// Every UTC day from `first` to `last`, both included.
pub fn days(first: NaiveDate, last: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    first.iter_days().take_while(move |d| *d <= last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_start_at_midnight_utc_and_unknown_ones_name_the_allowed() {
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 15, 30, 0).unwrap();
        let seven = TimeRange::parse(Some("7d"), &SUGGESTION_RANGES, TimeRange::Days(30)).unwrap();
        assert_eq!(
            seven.start(now),
            Some(Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap())
        );
        assert_eq!(
            TimeRange::parse(None, &SUGGESTION_RANGES, TimeRange::Days(30)).unwrap(),
            TimeRange::Days(30)
        );
        let e = TimeRange::parse(Some("1y"), &SUGGESTION_RANGES, TimeRange::Days(30)).unwrap_err();
        assert_eq!(e.field, "time_range");
        assert!(e.rule.contains("7d, 30d, 90d, all"), "{}", e.rule);
        assert!(TimeRange::parse(Some("24h"), &SUGGESTION_RANGES, TimeRange::All).is_err());
        let h = TimeRange::parse(Some("24h"), &TASK_RANGES, TimeRange::All).unwrap();
        assert_eq!(
            h.start(now),
            Some(Utc.with_ymd_and_hms(2026, 12, 5, 16, 0, 0).unwrap())
        );
    }
}
