 WHERE (tx_id, global_position) > ($1::text::xid8, $2)
   AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
 -- The table's columns, not the bigint alias: ordering by the alias would sort every
 -- remaining row instead of reading the (tx_id, global_position) index in order.
 ORDER BY events.tx_id, events.global_position
 LIMIT $3
