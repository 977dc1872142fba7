SELECT global_position, tx_id::text::bigint AS tx_id, aggregate_type, aggregate_id, sequence,
       event_type, event_version, payload::text AS payload, metadata::text AS metadata,
       metadata ->> 'tenant_id' AS tenant_id,
       -- Every conversation and message event names its conversation; a conversation's own
       -- stream id ends with it.
       coalesce(payload -> event_type ->> 'conversation_id',
                CASE WHEN aggregate_type = 'Conversation' THEN split_part(aggregate_id, ':', 2) END)
           AS conversation_id,
       metadata ->> 'occurred_at' AS occurred_at,
       metadata ->> 'trace_id' AS trace_id,
       hash
  FROM events
 WHERE (tx_id, global_position) > ($1::text::xid8, $2)
   AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
 -- The table's columns, not the bigint alias: ordering by the alias would sort every
 -- remaining row instead of reading the (tx_id, global_position) index in order.
 ORDER BY events.tx_id, events.global_position
 LIMIT $3
