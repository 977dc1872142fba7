-- Lag in events is approximated by positions (identity values can have gaps), which keeps this
-- constant-time however large the backlog is.
SELECT greatest(coalesce((SELECT max(global_position) FROM events), 0) - $2, 0)::bigint AS lag_events,
       coalesce(extract(epoch FROM now() - (
           SELECT recorded_at FROM events
            WHERE (tx_id, global_position) > ($1::text::xid8, $2)
            ORDER BY tx_id, global_position LIMIT 1)), 0)::float8 AS lag_seconds,
       coalesce(extract(epoch FROM now() - (
           SELECT min(xact_start) FROM pg_stat_activity
            WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid())), 0)::float8 AS oldest_transaction_seconds
