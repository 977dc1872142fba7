-- Read models, built by the projector from the events topic (and by replay from the store).
-- Each row also records how far its aggregate has been applied (`version` = the last applied
-- sequence), which is the per-aggregate guard that makes a re-delivered event a no-op.

CREATE TABLE IF NOT EXISTS rm_conversations (
    tenant_id       text        NOT NULL,
    conversation_id uuid        NOT NULL,
    kind            text        NOT NULL,
    name            text,
    description     text,
    metadata        jsonb,
    created_by      text        NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    -- The seq of the conversation's latest message (messages are numbered 1, 2, ... in the
    -- relay's order, which every reader shares).
    last_seq        bigint      NOT NULL DEFAULT 0,
    last_message    jsonb,
    version         bigint      NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id)
);

CREATE TABLE IF NOT EXISTS rm_members (
    tenant_id       text        NOT NULL,
    conversation_id uuid        NOT NULL,
    user_id         text        NOT NULL,
    joined_at       timestamptz NOT NULL,
    last_read_seq   bigint      NOT NULL DEFAULT 0,
    -- Messages from others after the member's read horizon.
    unread_count    bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, conversation_id, user_id)
);
CREATE INDEX IF NOT EXISTS rm_members_by_user ON rm_members (tenant_id, user_id);

CREATE TABLE IF NOT EXISTS rm_messages (
    tenant_id       text        NOT NULL,
    message_id      uuid        NOT NULL,
    conversation_id uuid        NOT NULL,
    seq             bigint      NOT NULL,
    sender_id       text        NOT NULL,
    content         jsonb       NOT NULL,
    channels        jsonb       NOT NULL,
    status          text        NOT NULL,
    created_at      timestamptz NOT NULL,
    edited_at       timestamptz,
    version         bigint      NOT NULL,
    PRIMARY KEY (tenant_id, message_id),
    UNIQUE (tenant_id, conversation_id, seq)
);

CREATE TABLE IF NOT EXISTS rm_message_history (
    tenant_id   text        NOT NULL,
    message_id  uuid        NOT NULL,
    sequence    bigint      NOT NULL,
    status      text        NOT NULL,
    channel     text,
    user_id     text,
    at          timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, message_id, sequence)
);

-- Where the projector is in each partition: advanced in the same transaction as the read models,
-- so a crash or rebalance neither loses nor repeats an effect.
CREATE TABLE IF NOT EXISTS projection_offsets (
    projection      text   NOT NULL,
    topic           text   NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset     bigint NOT NULL,
    PRIMARY KEY (projection, topic, kafka_partition)
);

-- The position of the last event applied (informational: `X-Projection-Position`).
CREATE TABLE IF NOT EXISTS projection_position (
    projection  text        PRIMARY KEY,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
