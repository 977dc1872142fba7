//! Revoked access tokens, shared by every gateway instance through Redis.
//!
//! A revoked token's `jti` is kept until the token would have expired anyway (plus the leeway);
//! every verification asks Redis, so a revocation on one instance is honoured by all of them from
//! the next request on. Open WebSockets of the token hear of it on their user's push channel and
//! close with 4001.
//!
//! When Redis cannot answer in time, tokens are accepted (counted in
//! `chat4all_revocation_check_unavailable_total`): refusing every request while Redis is away
//! would turn its outage into an outage of the API.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::tokens::LEEWAY_SECS;

const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// The push frame type that tells a user's sockets a token was revoked; never sent to clients.
pub const REVOKED_FRAME: &str = "internal.token_revoked";

pub struct Revocations {
    redis: Option<ConnectionManager>,
    prefix: String,
}

impl Revocations {
    pub fn new(redis: Option<ConnectionManager>, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, jti: &str) -> String {
        format!("{}:revoked:{jti}", self.prefix)
    }

    /// Whether the token `jti` was revoked.
    pub async fn is_revoked(&self, jti: &str) -> bool {
        let Some(redis) = &self.redis else {
            return false;
        };
        let mut redis = redis.clone();
        let answer = crate::limits::bounded(
            REDIS_TIMEOUT,
            redis::cmd("EXISTS")
                .arg(self.key(jti))
                .query_async::<i64>(&mut redis),
        )
        .await;
        answer
            .map_err(|e| unavailable(&e))
            .is_ok_and(|found| found > 0)
    }

    /// Revokes the token `jti` of `user` (in `tenant`), which expires at `exp` (Unix seconds).
    ///
    /// # Errors
    /// Redis could not record it; the caller must not claim the token is revoked.
    pub async fn revoke(
        &self,
        jti: &str,
        exp: u64,
        tenant: &str,
        user: &str,
    ) -> Result<(), redis::RedisError> {
        let Some(redis) = &self.redis else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no Redis connection",
            )));
        };
        let ttl = exp.saturating_sub(super::now_secs()) + LEEWAY_SECS + 1;
        let mut redis = redis.clone();
        let frame = serde_json::json!({
            "type": REVOKED_FRAME,
            "data": {"jti": jti, "tenant_id": tenant, "user_id": user},
        });
        redis::pipe()
            .cmd("SET")
            .arg(self.key(jti))
            .arg(1)
            .arg("EX")
            .arg(ttl)
            .ignore()
            .cmd("PUBLISH")
            .arg(format!("{}:user:{user}", self.prefix))
            .arg(frame.to_string())
            .ignore()
            .query_async::<()>(&mut redis)
            .await
    }
}

fn unavailable(error: &dyn std::fmt::Display) {
    tracing::warn!("revocation check: Redis did not answer, accepting the token: {error}");
    metrics::counter!("chat4all_revocation_check_unavailable_total").increment(1);
}
