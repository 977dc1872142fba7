-- Conversations (one per 100 messages) and their messages, shaped exactly like the engine's events.
WITH conversations AS (
    SELECT c, '00000000-0000-4000-8000-' || lpad(c::text, 12, '0') AS id
      FROM generate_series(1, greatest($1 / 100, 1)) AS c
), created AS (
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
    SELECT 'Conversation', 'bench:' || id, 1, 'ConversationCreated', '1.0',
           jsonb_build_object('ConversationCreated', jsonb_build_object(
               'conversation_id', id, 'kind', 'group', 'members', jsonb_build_array('alice', 'bob', 'carol'),
               'name', null, 'description', null, 'metadata', null, 'created_by', 'alice',
               'created_at', '2026-11-29T10:00:00Z')),
           '{"tenant_id": "bench", "actor": "alice", "trace_id": "0af7651916cd43dd8448eb211c80319c"}'
      FROM conversations
    RETURNING 1
)
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT 'Message', 'bench:' || m.id, 1, 'MessageSent', '1.0',
       jsonb_build_object('MessageSent', jsonb_build_object(
           'message_id', m.id,
           'conversation_id', '00000000-0000-4000-8000-' || lpad((n % greatest($1 / 100, 1) + 1)::text, 12, '0'),
           'sender_id', (ARRAY['alice', 'bob', 'carol'])[n % 3 + 1],
           'content', jsonb_build_object('type', 'text', 'text', 'Hello! This is a benchmark message of typical chat length.'),
           'channels', '[]'::jsonb,
           'sent_at', '2026-11-29T10:00:01Z')),
       '{"tenant_id": "bench", "actor": "alice", "trace_id": "0af7651916cd43dd8448eb211c80319c"}'
  FROM (SELECT n, gen_random_uuid() AS id FROM generate_series(1, $1) AS n) AS m
 WHERE (SELECT count(*) FROM created) > 0
