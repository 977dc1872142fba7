INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
VALUES ('Message', 'bench:' || $1, 1, 'MessageSent', '1.0',
        jsonb_build_object('MessageSent', jsonb_build_object(
            'message_id', $1, 'conversation_id', '00000000-0000-4000-8000-000000000001',
            'sender_id', 'alice',
            'content', jsonb_build_object('type', 'text', 'text', 'Hello! This is a benchmark message of typical chat length.'),
            'channels', '[]'::jsonb, 'sent_at', '2026-11-29T10:00:00.000Z')),
        '{"tenant_id": "bench", "actor": "alice", "trace_id": "0af7651916cd43dd8448eb211c80319c"}')
RETURNING global_position
