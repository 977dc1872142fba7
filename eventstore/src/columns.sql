-- What every reader of the store gets of an event (see `StoredEvent`); the statements of
-- `reader` and `stream` add their own conditions after it.
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
