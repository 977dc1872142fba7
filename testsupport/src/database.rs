//! Fresh, migrated databases for tests: one per test, so tests never see each other's events.
//!
//! The first call in a run migrates a template database (named after the migrations' checksums,
//! so a changed migration gets a new template); every call then clones it, which takes
//! milliseconds instead of re-running every migration. Databases of earlier runs older than an
//! hour are dropped on the way, so repeated runs do not fill the server.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

/// Every migration, embedded here too: a fresh database needs nothing of the crates under test.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

const PREFIX: &str = "c4a_test_";
static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// The server tests use: `DATABASE_URL` (any database on it), or the local default.
pub fn server_options() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/chat4all".to_owned());
    url.parse::<PgConnectOptions>()
        .unwrap_or_else(|e| panic!("DATABASE_URL is not a Postgres URL: {e}"))
        .disable_statement_logging()
}

async fn admin() -> PgConnection {
    PgConnection::connect_with(&server_options().database("postgres"))
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test Postgres server: {e}"))
}

fn template_name() -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for migration in MIGRATOR.iter() {
        for byte in migration.checksum.iter() {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("c4a_template_{hash:016x}")
}

async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let name = template_name();
            let mut conn = admin().await;
            // Test binaries run in parallel: one of them builds the template, the others wait.
            sqlx::query("SELECT pg_advisory_lock(7243012002)")
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            if !exists {
                let building = format!("{name}_building");
                sqlx::query(&format!("DROP DATABASE IF EXISTS {building}"))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                sqlx::query(&format!("CREATE DATABASE {building}"))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(server_options().database(&building))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                MIGRATOR
                    .run(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("migrating the test template failed: {e}"));
                pool.close().await;
                sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            sweep(&mut conn).await;
            sqlx::query("SELECT pg_advisory_unlock(7243012002)")
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            name
        })
        .await
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn sweep(conn: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'c4a_test_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    let cutoff = now_secs().saturating_sub(3600);
    for name in names {
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|c| c < cutoff) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut *conn)
                .await;
        }
    }
}

/// A new database with every migration applied, and its connection options.
///
/// # Panics
/// When the test server cannot be reached: tests cannot run without it.
pub async fn fresh_database() -> (PgConnectOptions, PgPool) {
    let template = template().await;
    let name = format!("{PREFIX}{}_{}", now_secs(), uuid::Uuid::new_v4().simple());
    let mut conn = admin().await;
    // CREATE DATABASE ... TEMPLATE fails while another session is connected to the template;
    // only the brief build above connects to it, so a few retries always suffice.
    let mut attempts = 0;
    loop {
        match sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .execute(&mut conn)
            .await
        {
            Ok(_) => break,
            Err(e) if attempts < 50 => {
                attempts += 1;
                tracing::debug!("retrying test database creation: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot create a test database: {e}"),
        }
    }
    let options = server_options().database(&name);
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(options.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (options, pool)
}
