INSERT INTO rm_conversations (tenant_id, conversation_id, kind, name, created_by, created_at, updated_at, last_seq, last_message, version)
SELECT 'bench', ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid, 'group', 'group ' || n, 'alice',
       now() - interval '1 day', now() - (n || ' seconds')::interval, CASE WHEN n = 1 THEN 100000 ELSE 10 END,
       jsonb_build_object('message_id', gen_random_uuid(), 'sender_id', 'bob', 'preview', 'Hello there', 'seq', 10, 'created_at', now()),
       1
  FROM generate_series(1, 1000) AS n;
INSERT INTO rm_members (tenant_id, conversation_id, user_id, joined_at, last_read_seq, own_since_read)
SELECT 'bench', conversation_id, u, created_at, 0, 0
  FROM rm_conversations, unnest(ARRAY['alice', 'bob', 'carol']) AS u;
INSERT INTO rm_messages (tenant_id, message_id, conversation_id, seq, sender_id, content, channels, status, created_at, version)
SELECT 'bench', gen_random_uuid(), '00000000-0000-4000-8000-000000000001'::uuid, n, 'bob',
       jsonb_build_object('type', 'text', 'text', 'Hello! This is a benchmark message of typical chat length.'),
       '[]'::jsonb, 'delivered', now() - ((100000 - n) || ' seconds')::interval, 1
  FROM generate_series(1, 100000) AS n;
ANALYZE rm_conversations;
ANALYZE rm_members;
ANALYZE rm_messages
