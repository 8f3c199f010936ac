//! How much a connection may send: the tenant's `client_msgs_per_s` (burst
//! twice that), read afresh for every message so a `PATCH` of the limit
//! reaches live connections at once; and how many refusals in a row it
//! may ignore before it is closed (4029).

use tokio::time::Instant;

/// Rate-limited messages (beyond the limit) tolerated before closing with 4029.
const RATE_VIOLATIONS_BEFORE_CLOSE: f64 = 20.0;

/// A token bucket: `rate` per second, holding at most `burst`.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            rate,
            burst,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What becomes of one client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Dropped, with a `rate_limited` error.
    Refused,
    /// Refused too often: close with 4029.
    Close,
}

pub struct Limiter {
    /// The limit the bucket was made for (0: none).
    per_s: u32,
    bucket: Option<Bucket>,
    violations: Bucket,
}

impl Limiter {
    pub fn new(per_s: u32) -> Self {
        Self {
            per_s,
            bucket: bucket(per_s),
            violations: Bucket::new(1.0, RATE_VIOLATIONS_BEFORE_CLOSE),
        }
    }

    /// One message under the tenant's current limit `per_s` (0: none).
    pub fn admit(&mut self, per_s: u32) -> Admit {
        if per_s != self.per_s {
            self.per_s = per_s;
            self.bucket = bucket(per_s);
        }
        let within = self.bucket.as_mut().is_none_or(Bucket::take);
        if within {
            Admit::Yes
        } else if self.violations.take() {
            Admit::Refused
        } else {
            Admit::Close
        }
    }
}

fn bucket(per_s: u32) -> Option<Bucket> {
    (per_s > 0).then(|| Bucket::new(per_s as f64, 2.0 * per_s as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_limit_takes_effect_at_the_next_message() {
        let mut l = Limiter::new(1);
        assert_eq!(l.admit(1), Admit::Yes);
        assert_eq!(l.admit(1), Admit::Yes);
        assert_eq!(l.admit(1), Admit::Refused, "burst of two used up");
        assert_eq!(l.admit(0), Admit::Yes, "0 means no limit");
        for _ in 0..100 {
            assert_eq!(l.admit(1000), Admit::Yes);
        }
    }
}
