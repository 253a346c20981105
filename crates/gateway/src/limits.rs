//! Per-tenant request rate limits: a token bucket per tenant.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::RateLimitConfig;

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// (requests per second, burst) of `tenant`; `None` when unlimited.
    fn limit(&self, tenant: &str) -> Option<(f64, f64)> {
        let (rate, burst) = match self.config.tenants.get(tenant) {
            Some(t) => (t.requests_per_second, t.burst),
            None => (self.config.requests_per_second, self.config.burst),
        };
        if rate <= 0.0 {
            return None;
        }
        let burst = if burst == 0 {
            rate.ceil().max(1.0)
        } else {
            f64::from(burst)
        };
        Some((rate, burst))
    }

    /// Takes one request from `tenant`'s bucket; `Err` with the reason when
    /// it is empty.
    pub fn check(&self, tenant: &str) -> Result<(), String> {
        self.check_at(tenant, Instant::now())
    }

    fn check_at(&self, tenant: &str, now: Instant) -> Result<(), String> {
        let Some((rate, burst)) = self.limit(tenant) else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock();
        let bucket = buckets.entry(tenant.to_string()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(format!(
                "tenant {tenant:?} exceeded the gateway's rate limit of {rate} requests/s (burst {burst})\n"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::TenantRateLimit;

    #[test]
    fn bucket_refills() {
        let mut config = RateLimitConfig {
            requests_per_second: 2.0,
            burst: 3,
            ..Default::default()
        };
        config.tenants.insert(
            "vip".into(),
            TenantRateLimit {
                requests_per_second: 0.0,
                burst: 0,
            },
        );
        let limiter = RateLimiter::new(config);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("a", t0).is_ok());
        }
        let err = limiter.check_at("a", t0).unwrap_err();
        assert!(
            err.contains("rate limit of 2 requests/s (burst 3)"),
            "{err}"
        );
        // Another tenant has its own bucket; an override of 0 is unlimited.
        assert!(limiter.check_at("b", t0).is_ok());
        for _ in 0..100 {
            assert!(limiter.check_at("vip", t0).is_ok());
        }
        // Half a second later one request is back.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limiter.check_at("a", t1).is_ok());
        assert!(limiter.check_at("a", t1).is_err());
    }
}
