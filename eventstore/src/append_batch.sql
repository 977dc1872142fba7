INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
       WITH ORDINALITY AS e(aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, n)
 ORDER BY e.n
    ON CONFLICT (aggregate_type, aggregate_id, sequence) DO NOTHING
RETURNING aggregate_type, aggregate_id, sequence, global_position
