-- A backlog of message events spread over conversations, shaped like the engine's own rows; one
-- statement, so every event has the same transaction id (as after a bulk import).
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT 'Message', 'bench:' || gen_random_uuid(), 1, 'MessageSent', '1.0',
       jsonb_build_object('MessageSent', jsonb_build_object(
           'message_id', gen_random_uuid(),
           'conversation_id', '00000000-0000-4000-8000-' || lpad((n % $2)::text, 12, '0'),
           'sender_id', 'alice',
           'content', jsonb_build_object('type', 'text', 'text', 'Hello! This is a benchmark message of typical chat length.'),
           'channels', '[]'::jsonb,
           'sent_at', '2026-11-29T10:00:00.000Z')),
       jsonb_build_object('tenant_id', 'bench', 'actor', 'alice',
           'trace_id', replace(gen_random_uuid()::text, '-', ''),
           'occurred_at', '2026-11-29T10:00:00.000Z',
           'correlation_id', gen_random_uuid(), 'causation_id', gen_random_uuid())
  FROM generate_series(1, $1) AS n
