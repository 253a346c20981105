//! Per-tenant ingestion rate limit: a token bucket of line bytes refilled at
//! `ingestion_rate_mb` MB/s up to `ingestion_burst_size_mb` MB (Loki's MB
//! are MiB). Enforced per distributor (Loki's `local` strategy).

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

const BYTES_PER_MB: f64 = 1024.0 * 1024.0;

/// Token buckets keyed by tenant.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(rate_mb: f64, burst_mb: f64) -> Self {
        let sane = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
        Self {
            rate: sane(rate_mb) * BYTES_PER_MB,
            burst: sane(burst_mb) * BYTES_PER_MB,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The refill rate in bytes per second.
    pub fn limit(&self) -> u64 {
        self.rate as u64
    }

    /// Takes `bytes` from `tenant`'s bucket if it holds that many.
    pub fn allow(&self, tenant: &str, bytes: u64, now: Instant) -> bool {
        let mut buckets = self.buckets.lock();
        let bucket = match buckets.get_mut(tenant) {
            Some(bucket) => bucket,
            None => buckets.entry(tenant.to_string()).or_insert(Bucket {
                tokens: self.burst,
                updated: now,
            }),
        };
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        let wanted = bytes as f64;
        if wanted <= bucket.tokens {
            bucket.tokens -= wanted;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_per_tenant() {
        let mb = BYTES_PER_MB as u64;
        let limiter = RateLimiter::new(1.0, 2.0);
        assert_eq!(limiter.limit(), mb);
        let t0 = Instant::now();
        assert!(limiter.allow("a", 2 * mb, t0), "a full burst is allowed");
        assert!(!limiter.allow("a", 1, t0), "the bucket is empty");
        assert!(limiter.allow("b", mb, t0), "tenants are independent");
        let t1 = t0 + Duration::from_millis(500);
        assert!(
            limiter.allow("a", mb / 2, t1),
            "half a second refills half a MB"
        );
        assert!(!limiter.allow("a", mb / 2, t1));
        let t2 = t1 + Duration::from_secs(3600);
        assert!(!limiter.allow("a", 3 * mb, t2), "never more than the burst");
        assert!(limiter.allow("a", 2 * mb, t2));
    }
}
