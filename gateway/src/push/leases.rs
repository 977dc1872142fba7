//! The per-user socket limit across every gateway instance.
//!
//! Each open socket holds a lease in a Redis sorted set per user, scored by when it lapses. A
//! socket is admitted when, after dropping lapsed leases, the set holds fewer than the limit;
//! the check and the insert are one script, so two instances admitting at once cannot both take
//! the last place. Leases are renewed while their sockets live and removed when they close; an
//! instance that dies without removing its leases frees them when they lapse ([`LEASE`]).
//!
//! Without Redis the limit holds per instance only (each instance still counts its own
//! sockets): refusing every connection while Redis is away would turn an outage of the fan-out
//! into an outage of push.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use crate::limits::{bounded, now_ms};

/// How long a lease outlives its last renewal.
pub const LEASE: Duration = Duration::from_secs(60);
const RENEW_EVERY: Duration = Duration::from_secs(20);
/// Admission does not wait on a slow Redis longer than this.
const ADMIT_TIMEOUT: Duration = Duration::from_millis(500);

const ADMIT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
";

/// Whether Redis admitted a socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    Refused,
    /// Redis could not answer; only the instance's own count applies.
    Unknown,
}

pub struct Leases {
    redis: Option<ConnectionManager>,
    prefix: String,
    /// Names this instance's leases apart from every other instance's.
    instance: String,
    script: redis::Script,
    /// The live leases of this instance: socket id to its user's key.
    held: Mutex<HashMap<u64, String>>,
}

impl Leases {
    pub fn new(redis: Option<ConnectionManager>, prefix: &str, instance: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            instance: format!("{instance}-{}", uuid::Uuid::new_v4().simple()),
            script: redis::Script::new(ADMIT),
            held: Mutex::default(),
        }
    }

    fn key(&self, tenant: &str, user: &str) -> String {
        // The tenant and user ids are validated (no ':'), so the key is unambiguous.
        format!("{}:ws-leases:{tenant}:{user}", self.prefix)
    }

    fn member(&self, socket: u64) -> String {
        format!("{}:{socket}", self.instance)
    }

    /// Takes one of the user's `limit` places for `socket`.
    pub async fn admit(&self, tenant: &str, user: &str, socket: u64, limit: usize) -> Admission {
        let Some(redis) = &self.redis else {
            return Admission::Unknown;
        };
        let key = self.key(tenant, user);
        let now = now_ms();
        let until = now + u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
        let mut redis = redis.clone();
        let mut invocation = self.script.key(&key);
        invocation
            .arg(now)
            .arg(until)
            .arg(limit)
            .arg(self.member(socket));
        let answer = bounded(ADMIT_TIMEOUT, invocation.invoke_async::<i64>(&mut redis)).await;
        match answer {
            Ok(1) => {
                self.held
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(socket, key);
                Admission::Admitted
            }
            Ok(_) => Admission::Refused,
            Err(e) => {
                tracing::warn!("push: the per-user limit could not be checked in Redis: {e}");
                Admission::Unknown
            }
        }
    }

    /// Gives the socket's place back.
    pub fn release(&self, socket: u64) {
        let key = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&socket);
        let (Some(key), Some(redis)) = (key, &self.redis) else {
            return;
        };
        let mut redis = redis.clone();
        let member = self.member(socket);
        tokio::spawn(async move {
            let removed = redis::cmd("ZREM")
                .arg(&key)
                .arg(&member)
                .query_async::<i64>(&mut redis)
                .await;
            if let Err(e) = removed {
                // The lease lapses on its own.
                tracing::debug!("push: releasing a socket lease failed: {e}");
            }
        });
    }

    /// Renews every lease this instance holds, until `stop`.
    pub async fn renew_periodically(&self, stop: CancellationToken) {
        let Some(redis) = &self.redis else {
            return;
        };
        let mut every = tokio::time::interval(RENEW_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let held: Vec<(u64, String)> = self
                .held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(socket, key)| (*socket, key.clone()))
                .collect();
            if held.is_empty() {
                continue;
            }
            let until = now_ms() + u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
            let mut pipe = redis::pipe();
            for (socket, key) in &held {
                // XX: a lease released meanwhile stays released.
                pipe.cmd("ZADD")
                    .arg(key)
                    .arg("XX")
                    .arg("CH")
                    .arg(until)
                    .arg(self.member(*socket))
                    .ignore();
                pipe.cmd("PEXPIREAT").arg(key).arg(until).ignore();
            }
            let mut redis = redis.clone();
            if let Err(e) = pipe.query_async::<()>(&mut redis).await {
                tracing::warn!("push: renewing socket leases failed: {e}");
            }
        }
    }
}
