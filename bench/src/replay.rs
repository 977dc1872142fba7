//! Replay: how fast the read models are rebuilt from the event store, against a sequential scan
//! of the same events (the rate at which the store alone can hand them over).

use std::path::PathBuf;
use std::time::Instant;

use chat4all_platform::{Secret, Settings};
use futures::TryStreamExt;

use super::report::Report;
use super::{drop_database, recreate_database, with_database};

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Message events in the store (plus one creation per 100 of them).
    #[arg(long, default_value_t = 1_000_000)]
    events: i64,
    /// A short run (50,000 events).
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

pub async fn run(settings: &Settings, args: ReplayArgs) -> anyhow::Result<()> {
    let started_at = chrono::Utc::now();
    let events = if args.quick { 50_000 } else { args.events };
    let base = settings.database.connect_options()?;
    let database = format!("chat4all_bench_replay_{}", std::process::id());
    recreate_database(&base, &database).await?;
    let mut settings = settings.clone();
    settings.database.url = Secret::new(with_database(settings.database.url.expose(), &database));
    chat4all_eventstore::migrate(&settings.database).await?;
    let pool = settings.database.connect().await?;
    println!("replay: writing {events} message events");
    sqlx::query(include_str!("replay_store.sql"))
        .bind(events)
        .execute(&pool)
        .await?;
    // As autovacuum would have by now on a store with this history: without statistics, the
    // planner sorts the whole table for every batch instead of walking the tail index.
    sqlx::query("ANALYZE events").execute(&pool).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;

    // Limit: one sequential pass over the same rows, payloads included.
    let started = Instant::now();
    let mut scanned = 0u64;
    let mut rows = sqlx::query_scalar::<_, serde_json::Value>(
        "SELECT payload FROM events ORDER BY tx_id, global_position",
    )
    .fetch(&pool);
    while rows.try_next().await?.is_some() {
        scanned += 1;
    }
    drop(rows);
    let limit = scanned as f64 / started.elapsed().as_secs_f64();
    println!("limit: {limit:.0} events/s (a sequential read of the same events)");

    let started = Instant::now();
    let mut last = Instant::now();
    let applied = chat4all_projections::replay::rebuild(&pool, |p| {
        if last.elapsed().as_secs() >= 2 {
            println!(
                "  {:>9} of {} events  {:>7.0} events/s",
                p.applied,
                p.total,
                p.applied as f64 / p.started.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
    })
    .await?;
    let engine = applied as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    drop_database(&base, &database).await?;

    let ratio = engine / limit;
    println!();
    println!("engine   {engine:>10.0} events/s   ({applied} of {total} events)");
    println!("limit    {limit:>10.0} events/s");
    println!("ratio    {ratio:>10.3}");
    let mut report = Report::new("replay", started_at);
    report.engine_per_s = engine;
    report.limit_per_s = Some(limit);
    report.ratio = Some(ratio);
    report.details = serde_json::json!({
        "events": total, "applied": applied,
        "limit": "a sequential read of the same events",
    });
    report.write(&args.out)?;
    Ok(())
}
