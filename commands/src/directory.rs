//! Membership answers read from the event store, for the `Message` aggregate's decisions.
//!
//! Every send asks whether its sender is a member, so answers are cached per conversation. The
//! cache is only trusted while a `LISTEN chat4all_membership` connection is up: a trigger
//! notifies every membership change (joins and leaves; creation needs none, as unknown
//! conversations are never cached), and a notification drops that conversation's entry. The
//! listening connection proves it is alive every few seconds; when it is lost, the cache is
//! cleared and bypassed until it is back, so a lost notification cannot leave a stale answer
//! behind, and entries expire after a minute regardless. This instance's own membership commands
//! also drop the entry synchronously, so its next answer already reflects them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chat4all_domain::conversation::ConversationEvent;
use chat4all_domain::{
    ConversationDirectory, ConversationId, DirectoryError, Membership, TenantId,
};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const CHANNEL: &str = "chat4all_membership";
/// Conversations remembered at most (each up to a group's worth of member ids).
const CAPACITY: usize = 20_000;
/// An entry is refetched after this long even without a notification: a bound on staleness
/// should a notification ever be lost in a way the listener does not notice.
const TTL: Duration = Duration::from_secs(60);
/// How often the listening connection proves it is alive. An idle connection silently dropped by
/// the network would otherwise never report an error, and notifications would stop unnoticed.
const HEARTBEAT: Duration = Duration::from_secs(15);

#[derive(Default)]
struct Cache {
    entries: Mutex<HashMap<String, (Arc<Membership>, Instant)>>,
    /// Bumped by every invalidation: a fill that started before one must not be stored.
    epoch: AtomicU64,
    listening: AtomicBool,
}

impl Cache {
    fn get(&self, stream: &str) -> Option<Arc<Membership>> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(stream)
            .filter(|(_, stored)| stored.elapsed() < TTL)
            .map(|(membership, _)| membership.clone())
    }

    fn store(&self, stream: String, membership: Arc<Membership>, epoch: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock that invalidations also take, so none can slip in between.
        if !self.listening.load(Ordering::Acquire) || self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(stream, (membership, Instant::now()));
    }

    fn forget(&self, stream: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.remove(stream);
    }

    fn forget_all(&self, listening: bool) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.listening.store(listening, Ordering::Release);
        entries.clear();
    }
}

/// Folds a conversation's membership events (and only those: the partial index
/// `events_membership` skips read horizons, however many there are).
#[derive(Clone)]
pub struct StoreDirectory {
    pool: PgPool,
    cache: Arc<Cache>,
}

impl StoreDirectory {
    /// A directory without a cache until [`StoreDirectory::listen`] runs.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Arc::default(),
        }
    }

    /// Keeps the cache coherent with the store until `stop`; spawn it once per process.
    pub async fn listen(self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            match self.listen_once(&stop).await {
                Ok(()) => break,
                Err(e) => {
                    self.cache.forget_all(false);
                    tracing::warn!(
                        "membership notifications lost ({e}); cache bypassed until reconnected"
                    );
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.cache.forget_all(false);
    }

    async fn listen_once(&self, stop: &CancellationToken) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        // Without this, sqlx would reconnect silently and notifications sent meanwhile be lost.
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await?;
        self.cache.forget_all(true);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                received = listener.try_recv() => match received? {
                    Some(notification) => self.cache.forget(notification.payload()),
                    None => return Err(sqlx::Error::PoolClosed),
                },
                _ = heartbeat.tick() => {
                    let ping = sqlx::query("SELECT 1").execute(&mut listener);
                    match tokio::time::timeout(HEARTBEAT, ping).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(_) => return Err(sqlx::Error::PoolTimedOut),
                    }
                }
            }
        }
    }

    /// Drops what this instance knows of `conversation` (after it changed the membership itself).
    pub fn forget(&self, tenant: &TenantId, conversation: ConversationId) {
        self.cache.forget(&tenant.stream_id(conversation));
    }

    async fn load(&self, stream: &str) -> Result<Option<Membership>, DirectoryError> {
        let rows: Vec<(serde_json::Value,)> = sqlx::query_as(
            "SELECT payload FROM events \
             WHERE aggregate_type = 'Conversation' AND aggregate_id = $1 \
               AND event_type IN ('ConversationCreated', 'MemberJoined', 'MemberLeft') \
             ORDER BY sequence",
        )
        .bind(stream)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| DirectoryError(Box::new(e)))?;
        let mut membership: Option<Membership> = None;
        for (payload,) in rows {
            let event: ConversationEvent =
                serde_json::from_value(payload).map_err(|e| DirectoryError(Box::new(e)))?;
            match event {
                ConversationEvent::ConversationCreated(created) => {
                    membership = Some(Membership {
                        kind: created.kind,
                        members: created.members.into_iter().collect(),
                    });
                }
                ConversationEvent::MemberJoined(joined) => {
                    if let Some(m) = membership.as_mut() {
                        m.members.insert(joined.user_id);
                    }
                }
                ConversationEvent::MemberLeft(left) => {
                    if let Some(m) = membership.as_mut() {
                        m.members.remove(&left.user_id);
                    }
                }
                ConversationEvent::ReadHorizonAdvanced(_) => {}
            }
        }
        Ok(membership)
    }
}

#[async_trait]
impl ConversationDirectory for StoreDirectory {
    async fn membership(
        &self,
        tenant: &TenantId,
        conversation: ConversationId,
    ) -> Result<Option<Arc<Membership>>, DirectoryError> {
        let stream = tenant.stream_id(conversation);
        if let Some(hit) = self.cache.get(&stream) {
            return Ok(Some(hit));
        }
        let epoch = self.cache.epoch.load(Ordering::Acquire);
        let membership = self.load(&stream).await?.map(Arc::new);
        if let Some(m) = &membership {
            self.cache.store(stream, m.clone(), epoch);
        }
        Ok(membership)
    }
}
