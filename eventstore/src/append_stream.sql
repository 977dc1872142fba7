INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT $1, $2, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
  FROM unnest($3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
       WITH ORDINALITY AS e(sequence, event_type, event_version, payload, metadata, n)
 ORDER BY e.n
RETURNING sequence, global_position
