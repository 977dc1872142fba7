//! Leadership: one relay publishes per deployment.
//!
//! The leader holds a session-level advisory lock on a connection of its own. When its process
//! dies, the server closes that session and releases the lock, and a standby, trying every
//! second, takes over. The checkpoint is written through the same connection, so a leader whose
//! connection (and with it the lock) is gone cannot move the checkpoint: at worst it published
//! one batch that its successor publishes again.

use std::time::Duration;

use chat4all_platform::lifecycle::RoleState;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use chat4all_eventstore::reader::checkpoint_of;
use chat4all_eventstore::{Checkpoint, StoreError};

use crate::RelayError;

/// How long storing a checkpoint may take before the leadership is considered lost.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a standby tries to become the leader.
const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// The held leadership of one deployment's relay.
pub struct Leadership {
    conn: PgConnection,
    deployment: String,
}

/// A stable 64-bit lock key per deployment (FNV-1a of a namespaced name).
fn lock_key(deployment: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "chat4all-relay:".bytes().chain(deployment.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

impl Leadership {
    /// Waits until this process leads `deployment`, or `stop` is cancelled (`None`).
    ///
    /// # Errors
    /// Never for an unreachable database (it keeps trying); only when stopping.
    pub async fn acquire(
        options: &PgConnectOptions,
        deployment: &str,
        role: &RoleState,
        stop: &CancellationToken,
    ) -> Option<Self> {
        let mut reported = false;
        loop {
            match Self::try_acquire(options, deployment).await {
                Ok(Some(leadership)) => return Some(leadership),
                Ok(None) => {
                    // A standby is doing its job: ready, waiting to take over.
                    role.standing_by("the relay lead, held by another relay");
                    if !reported {
                        tracing::info!(deployment, "another relay leads; waiting as standby");
                        reported = true;
                    }
                }
                Err(e) => {
                    role.waiting("Postgres, to take the relay lead");
                    tracing::warn!("cannot reach Postgres to take the relay lead: {e}");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(STANDBY_RETRY) => {}
            }
        }
    }

    async fn try_acquire(
        options: &PgConnectOptions,
        deployment: &str,
    ) -> Result<Option<Self>, sqlx::Error> {
        // The server must notice a dead leader (host crash, partition) within seconds, not after
        // the OS's two-hour keepalive, for the lock to pass to a standby in time.
        let options = options.clone().options([
            ("tcp_keepalives_idle", "3"),
            ("tcp_keepalives_interval", "1"),
            ("tcp_keepalives_count", "3"),
            ("tcp_user_timeout", "6000"),
        ]);
        let mut conn = PgConnection::connect_with(&options).await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(deployment))
            .fetch_one(&mut conn)
            .await?;
        if !locked {
            conn.close().await.ok();
            return Ok(None);
        }
        tracing::info!(deployment, "this relay now leads");
        Ok(Some(Self {
            conn,
            deployment: deployment.to_owned(),
        }))
    }

    /// Where the deployment's relay got to.
    ///
    /// # Errors
    /// The leadership connection failed.
    pub async fn checkpoint(&mut self) -> Result<Checkpoint, RelayError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT tx_id::text::bigint, position FROM relay_checkpoints WHERE deployment = $1",
        )
        .bind(&self.deployment)
        .fetch_optional(&mut self.conn)
        .await
        .map_err(RelayError::LostLeadership)?;
        Ok(
            row.map_or_else(Checkpoint::default, |(tx_id, position)| Checkpoint {
                tx_id,
                position,
            }),
        )
    }

    /// Records that everything up to `checkpoint` is acknowledged by the broker.
    ///
    /// # Errors
    /// The leadership connection failed: this relay must stop publishing.
    pub async fn store(&mut self, checkpoint: Checkpoint) -> Result<(), RelayError> {
        let stored = sqlx::query(
            "INSERT INTO relay_checkpoints (deployment, tx_id, position) \
             VALUES ($1, $2::text::xid8, $3) \
             ON CONFLICT (deployment) DO UPDATE \
             SET tx_id = EXCLUDED.tx_id, position = EXCLUDED.position, updated_at = now()",
        )
        .bind(&self.deployment)
        .bind(checkpoint.tx_id.to_string())
        .bind(checkpoint.position)
        .execute(&mut self.conn);
        // A connection that hangs is as good as lost: the lock may already be someone else's.
        match tokio::time::timeout(STORE_TIMEOUT, stored).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(RelayError::LostLeadership(e)),
            Err(_) => Err(RelayError::LostLeadership(sqlx::Error::PoolTimedOut)),
        }
    }

    /// Proves the leadership connection (and so the lock) is still there.
    ///
    /// # Errors
    /// The connection is gone.
    pub async fn confirm(&mut self) -> Result<(), RelayError> {
        self.conn.ping().await.map_err(RelayError::LostLeadership)
    }

    /// Gives the lead up (closing the session releases the lock).
    pub async fn release(self) {
        self.conn.close().await.ok();
    }
}

/// Moves `deployment`'s checkpoint to just after the event at `after_position` (0: before
/// everything), for use after the store was restored into a new cluster, whose transaction ids
/// differ from those the old checkpoint names. The events after that position are published
/// (again) by the next leader; pick the last position the topic is known to hold.
///
/// # Errors
/// No event has that position, or a database failure.
pub async fn rebase(
    pool: &sqlx::PgPool,
    deployment: &str,
    after_position: i64,
) -> Result<Checkpoint, RelayError> {
    let checkpoint = if after_position == 0 {
        Checkpoint::default()
    } else {
        checkpoint_of(pool, after_position)
            .await?
            .ok_or(StoreError::UnknownPosition(after_position))?
    };
    sqlx::query(
        "INSERT INTO relay_checkpoints (deployment, tx_id, position) VALUES ($1, $2::text::xid8, $3) \
         ON CONFLICT (deployment) DO UPDATE \
         SET tx_id = EXCLUDED.tx_id, position = EXCLUDED.position, updated_at = now()",
    )
    .bind(deployment)
    .bind(checkpoint.tx_id.to_string())
    .bind(checkpoint.position)
    .execute(pool)
    .await?;
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::lock_key;

    #[test]
    fn deployments_get_distinct_stable_keys() {
        assert_eq!(lock_key("chat4all"), lock_key("chat4all"));
        assert_ne!(lock_key("chat4all"), lock_key("chat4all-eu"));
    }
}
