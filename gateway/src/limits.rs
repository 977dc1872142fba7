//! Limits shared by every gateway instance through Redis: the per-user rate of state-changing
//! requests, and the throttle on failed client authentication.
//!
//! Both fail open: when Redis cannot answer in time the request goes through (counted in
//! `chat4all_rate_limit_unavailable_total`), because refusing every write while Redis is away
//! would turn an outage of a safeguard into an outage of the API.

use std::time::Duration;

use redis::aio::ConnectionManager;

/// How long a limit check may wait for Redis.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
const WINDOW_MS: u64 = 60_000;

/// A sliding window log: the requests of the last minute, one sorted-set member each. Exact, so
/// the 61st request in any 60 s is refused, not just within a calendar minute. A refused request
/// is not logged, so a client hammering while limited does not extend its own wait.
/// Returns {admitted (0/1), requests in the window, ms until the oldest leaves the window}.
const SLIDING_WINDOW: &str = r"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local admitted = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  count = count + 1
  admitted = 1
end
redis.call('PEXPIRE', KEYS[1], window)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = window
if oldest[2] then
  reset = tonumber(oldest[2]) + window - now
end
return {admitted, count, reset}
";

/// Counts failures per key over a fixed window: {failures so far, ms left in the window}.
const FAILURES: &str = r"
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[1] == '1' then
  count = redis.call('INCR', KEYS[1])
  if count == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
end
return {count, redis.call('PTTL', KEYS[1])}
";

pub(crate) fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default()
}

/// A Redis call that may take at most `timeout`; not answering in time is an error like any
/// other, since every caller fails open (or falls back) either way.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(answer) => answer.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

fn unavailable(what: &str, error: &dyn std::fmt::Display) {
    tracing::warn!("{what}: Redis did not answer, letting the request through: {error}");
    metrics::counter!("chat4all_rate_limit_unavailable_total").increment(1);
}

/// Where a user stands against the rate limit after this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until a place frees up in the window.
    pub reset_secs: u64,
    pub admitted: bool,
}

impl Standing {
    /// The `X-RateLimit-*` headers (and `Retry-After` when refused).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", self.reset_secs.to_string()),
        ];
        if !self.admitted {
            headers.push(("retry-after", self.reset_secs.max(1).to_string()));
        }
        headers
    }
}

pub struct RateLimiter {
    redis: Option<ConnectionManager>,
    prefix: String,
    per_minute: u32,
    script: redis::Script,
}

impl RateLimiter {
    pub fn new(redis: Option<ConnectionManager>, prefix: &str, per_minute: u32) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            per_minute,
            script: redis::Script::new(SLIDING_WINDOW),
        }
    }

    /// Counts one state-changing request of the user; `None` when the limit is off.
    pub async fn check(&self, tenant: &str, user: &str) -> Option<Standing> {
        if self.per_minute == 0 {
            return None;
        }
        let open = Standing {
            limit: self.per_minute,
            remaining: self.per_minute,
            reset_secs: WINDOW_MS / 1000,
            admitted: true,
        };
        let Some(redis) = &self.redis else {
            return Some(open);
        };
        let now = now_ms();
        let mut redis = redis.clone();
        let mut invocation = self
            .script
            .key(format!("{}:rate:{tenant}:{user}", self.prefix));
        invocation
            .arg(now)
            .arg(WINDOW_MS)
            .arg(self.per_minute)
            .arg(format!("{now}-{}", uuid::Uuid::new_v4().simple()));
        let answer = bounded(
            REDIS_TIMEOUT,
            invocation.invoke_async::<(i64, i64, i64)>(&mut redis),
        )
        .await;
        match answer {
            Ok((admitted, count, reset_ms)) => {
                let count = u32::try_from(count).unwrap_or(u32::MAX);
                Some(Standing {
                    limit: self.per_minute,
                    remaining: self.per_minute.saturating_sub(count),
                    reset_secs: u64::try_from(reset_ms).unwrap_or(0).div_ceil(1000),
                    admitted: admitted == 1,
                })
            }
            Err(e) => {
                unavailable("rate limit", &e);
                Some(open)
            }
        }
    }
}

/// Failed client authentications allowed per client id in [`THROTTLE_WINDOW`].
pub const FAILURES_PER_CLIENT: i64 = 10;
/// Failed client authentications allowed per source address in [`THROTTLE_WINDOW`].
pub const FAILURES_PER_ADDRESS: i64 = 30;
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(300);

/// Slows down guessing of client secrets: too many failures for one client id or from one
/// address refuse further attempts (even correct ones) until the window passes.
pub struct AuthThrottle {
    redis: Option<ConnectionManager>,
    prefix: String,
    script: redis::Script,
}

impl AuthThrottle {
    pub fn new(redis: Option<ConnectionManager>, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            script: redis::Script::new(FAILURES),
        }
    }

    fn keys(&self, client_id: &str, address: Option<&str>) -> Vec<(String, i64)> {
        // Client ids are attacker-chosen text: hashed, so a key cannot grow without bound.
        use sha2::Digest;
        let client = sha2::Sha256::digest(client_id.as_bytes());
        let mut keys = vec![(
            format!("{}:authfail:client:{client:x}", self.prefix),
            FAILURES_PER_CLIENT,
        )];
        if let Some(address) = address {
            keys.push((
                format!("{}:authfail:addr:{address}", self.prefix),
                FAILURES_PER_ADDRESS,
            ));
        }
        keys
    }

    async fn run(&self, key: &str, count: bool) -> Option<(i64, i64)> {
        let redis = self.redis.as_ref()?;
        let mut redis = redis.clone();
        let mut invocation = self.script.key(key);
        invocation
            .arg(if count { "1" } else { "0" })
            .arg(u64::try_from(THROTTLE_WINDOW.as_millis()).unwrap_or(u64::MAX));
        bounded(
            REDIS_TIMEOUT,
            invocation.invoke_async::<(i64, i64)>(&mut redis),
        )
        .await
        .map_err(|e| unavailable("client authentication throttle", &e))
        .ok()
    }

    /// Seconds to wait when attempts for this client or from this address are throttled.
    pub async fn blocked(&self, client_id: &str, address: Option<&str>) -> Option<u64> {
        for (key, allowed) in self.keys(client_id, address) {
            if let Some((failures, ttl_ms)) = self.run(&key, false).await {
                if failures >= allowed {
                    return Some(u64::try_from(ttl_ms).unwrap_or(1).div_ceil(1000).max(1));
                }
            }
        }
        None
    }

    /// Counts a failed attempt.
    pub async fn failed(&self, client_id: &str, address: Option<&str>) {
        for (key, _) in self.keys(client_id, address) {
            self.run(&key, true).await;
        }
    }
}
