//! Per-tenant request rate limits (`http_rps`): a token bucket per tenant in
//! this process, holding at most one second of requests. The limit is read
//! from KV `SB_TENANTS` through the shared watch on every request, so a
//! `PATCH` of the limits applies within moments; `0` means no limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use switchboard_platform::tenants::TenantDirectory;
use switchboard_proto::TenantId;
use switchboard_proto::tenant::Limits;

pub struct RateLimiter {
    tenants: TenantDirectory,
    buckets: Mutex<HashMap<TenantId, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(tenants: TenantDirectory) -> Self {
        Self {
            tenants,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `tenant`'s bucket, or says how long until one
    /// is available.
    pub fn check(&self, tenant: &TenantId) -> Result<(), Duration> {
        let rps = self
            .tenants
            .get(tenant)
            .map(|c| c.limits.http_rps)
            .unwrap_or(Limits::default().http_rps);
        if rps == 0 {
            return Ok(());
        }
        let rate = f64::from(rps);
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .expect("bucket lock is never poisoned: holders do not panic");
        let bucket = buckets.entry(tenant.clone()).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        let elapsed = now.duration_since(bucket.last).as_secs_f64();
        // A lowered limit takes effect at once: the bucket never holds more
        // than the current limit allows.
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_unknown_to_the_directory_gets_the_default_second_of_burst() {
        let limiter = RateLimiter::new(TenantDirectory::default());
        let t = TenantId::parse("acme").unwrap();
        let burst = Limits::default().http_rps;
        let mut passed = 0;
        let wait = loop {
            match limiter.check(&t) {
                Ok(()) => passed += 1,
                Err(wait) => break wait,
            }
            assert!(passed < 2 * burst, "never limited");
        };
        // A second's worth, plus what refilled while the loop ran.
        assert!(passed >= burst, "{passed}");
        assert!(wait <= Duration::from_millis(1), "{wait:?}");
        // Other tenants have their own bucket.
        assert!(limiter.check(&TenantId::parse("other").unwrap()).is_ok());
    }
}
