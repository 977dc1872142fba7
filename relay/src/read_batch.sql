SELECT global_position, tx_id::text::bigint AS tx_id, aggregate_type, aggregate_id, sequence,
       event_type, event_version, payload, metadata, hash
  FROM events
 WHERE (tx_id, global_position) > ($1::text::xid8, $2)
   AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY tx_id, global_position
 LIMIT $3
