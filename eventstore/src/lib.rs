//! The event store, which is also the transactional outbox: one owner for everything that writes
//! or reads the `events` table.
//!
//! - [`append`]: group commit for single-event appends, and all-or-nothing appends of several
//!   events to one stream; both answer with the events' global positions.
//! - [`reader`]: the gap-safe tail in `(tx_id, global_position)` order, which the relay and
//!   replay both read, and how far a reader is behind.
//! - [`envelope`]: the record every event becomes on the events topic, encoded by the relay and
//!   decoded by every consumer.
//! - [`stream`]: one stream's events up to a sequence, a position or a time.
//! - [`chain`]: verification of the per-stream hash chain the store writes on every append.
//!
//! The schema itself lives in `migrations/` and is embedded here ([`MIGRATOR`]).
#![forbid(unsafe_code)]

pub mod append;
pub mod chain;
pub mod envelope;
pub mod reader;
pub mod stream;

pub use append::{Append, AppendError, Appender, StreamEvent};
pub use envelope::Envelope;
pub use reader::{read_batch, Behind, Checkpoint, StoredEvent};
pub use stream::Until;

/// A global position in the event store: the consistency token every command answers with.
pub type Position = i64;

/// Every migration of `migrations/`, embedded, applied in order by `chat4all migrate` and tests.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Failures of reading or writing the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("no event has position {0}")]
    UnknownPosition(i64),
    #[error("migrating the event store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Settings(#[from] chat4all_platform::SettingsError),
}

/// Applies every migration, first creating the database itself when the server lacks it;
/// returns how many migrations the schema now has.
///
/// # Errors
/// The server cannot be reached, the database cannot be created, or a migration fails.
pub async fn migrate(settings: &chat4all_platform::DatabaseSettings) -> Result<usize, StoreError> {
    let options = settings.connect_options()?;
    ensure_database(&options).await?;
    let pool = settings.connect().await?;
    MIGRATOR.run(&pool).await?;
    pool.close().await;
    let applied = MIGRATOR.iter().count();
    tracing::info!(migrations = applied, "database is up to date");
    Ok(applied)
}

async fn ensure_database(options: &sqlx::postgres::PgConnectOptions) -> Result<(), StoreError> {
    use sqlx::{ConnectOptions, Connection};
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    match options.connect().await {
        Ok(conn) => {
            conn.close().await.ok();
            Ok(())
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            let mut admin = options.clone().database("postgres").connect().await?;
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            sqlx::query(&format!("CREATE DATABASE {quoted}"))
                .execute(&mut admin)
                .await?;
            tracing::info!(database = %name, "created the database");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
