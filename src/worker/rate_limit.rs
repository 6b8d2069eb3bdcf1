//! A token bucket per business number: Meta allows 80 messages per second per number
//! by default (PROTOCOL.md), and a burst above it earns 130429 errors.
//!
//! The limit is per process: several wabot processes on one number share Meta's limit,
//! so each should be configured with its share (`WABOT_SEND_RATE`).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Token buckets keyed by phone number id.
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    /// `per_sec` messages a second, with bursts of up to one second's worth.
    pub fn new(per_sec: u32) -> RateLimiter {
        let per_sec = f64::from(per_sec.max(1));
        RateLimiter {
            per_sec,
            burst: per_sec,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until `key` may send one more message, and takes the token.
    pub async fn acquire(&self, key: &str) {
        loop {
            let wait = {
                let mut buckets = self.buckets.lock().await;
                let now = Instant::now();
                let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
                    tokens: self.burst,
                    refilled: now,
                });
                let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
                bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.burst);
                bucket.refilled = now;
                if bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_sec)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time (tokio's paused clock needs its test-util feature): the bounds are
    // loose on purpose.
    #[tokio::test]
    async fn a_burst_is_spread_at_the_configured_rate() {
        let limiter = RateLimiter::new(20);
        let start = Instant::now();
        for _ in 0..30 {
            limiter.acquire("123").await;
        }
        // Twenty go at once (the burst), the other ten at twenty a second.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
        assert!(elapsed <= Duration::from_secs(3), "{elapsed:?}");
    }

    #[tokio::test]
    async fn numbers_do_not_share_a_bucket() {
        let limiter = RateLimiter::new(2);
        let start = Instant::now();
        for key in ["a", "a", "b", "b"] {
            limiter.acquire(key).await;
        }
        assert!(start.elapsed() < Duration::from_millis(200));
    }
}
