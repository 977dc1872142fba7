-- Lag in events counts what follows the checkpoint in the relay's order, capped so that a huge
-- backlog costs a bounded scan of the tail index.
SELECT (SELECT count(*) FROM (SELECT 1 FROM events
                               WHERE (tx_id, global_position) > ($1::text::xid8, $2)
                               LIMIT 1000000) AS behind)::bigint AS events,
       coalesce(extract(epoch FROM now() - (
           SELECT recorded_at FROM events
            WHERE (tx_id, global_position) > ($1::text::xid8, $2)
            ORDER BY tx_id, global_position LIMIT 1)), 0)::float8 AS seconds,
       -- Transactions of every role, and prepared ones, hold the horizon back; seeing other
       -- roles' transactions needs pg_read_all_stats (or pg_monitor).
       coalesce(extract(epoch FROM now() - least(
           (SELECT min(xact_start) FROM pg_stat_activity
             WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()),
           (SELECT min(prepared) FROM pg_prepared_xacts))), 0)::float8 AS oldest_transaction_seconds
