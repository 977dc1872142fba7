-- The event store, which is also the transactional outbox.
--
-- The column set up to `metadata` is what postgres-es reads and writes; the columns after it have
-- defaults, so postgres-es never names them.
--  * global_position: a total order of every event, taken at insert time. It becomes visible at
--    commit time, so readers must never tail it on its own (see relay::tail).
--  * tx_id: the inserting transaction, so readers can stay below the oldest in-flight one.
CREATE TABLE IF NOT EXISTS events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence >= 1),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX IF NOT EXISTS events_global_position ON events (global_position);
-- The gap-safe tail reads in (tx_id, global_position) order.
CREATE INDEX IF NOT EXISTS events_tail ON events (tx_id, global_position);
-- Membership answers for commands read only these event types of a conversation stream, so read
-- horizons (the bulk of a busy conversation's stream) never slow a send down.
CREATE INDEX IF NOT EXISTS events_membership ON events (aggregate_id, sequence)
    WHERE aggregate_type = 'Conversation'
      AND event_type IN ('ConversationCreated', 'MemberJoined', 'MemberLeft');
-- Messages per conversation in the store, for "mark everything read" without the read side.
CREATE INDEX IF NOT EXISTS events_messages_by_conversation
    ON events ((metadata ->> 'tenant_id'), (payload -> 'MessageSent' ->> 'conversation_id'))
    WHERE aggregate_type = 'Message' AND event_type = 'MessageSent';

-- Wakes tailing readers (the relay) without polling. A notification is only a wake-up hint:
-- readers always re-read the table below the transaction horizon, so a coalesced or skipped
-- notification delays nothing for longer than the reader's re-poll interval.
--
-- Why the advisory lock: a transaction that has sent NOTIFY takes a cluster-wide lock while it
-- commits, which serialises all notifying commits and defeats group commit (measured here: 550
-- instead of 6,600 single-row commits/s at 32 clients). So at most one in-flight transaction at a
-- time carries the notification; the others commit without it, and the reader, woken by the
-- carrier, keeps re-polling quickly while transactions are still in flight below its horizon.
CREATE OR REPLACE FUNCTION events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF pg_try_advisory_xact_lock(7243012001) THEN
        PERFORM pg_notify('chat4all_events', '');
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS events_notify ON events;
CREATE TRIGGER events_notify
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

-- The store is append-only: an event, once written, is history.
CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

DROP TRIGGER IF EXISTS events_append_only ON events;
CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
