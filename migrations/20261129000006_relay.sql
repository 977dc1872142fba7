-- Where each deployment's relay has got to in the event store's (tx_id, global_position) order.
-- Written by the leader after the broker acknowledged a batch, through the same connection that
-- holds the leadership lock, so a relay that lost its lock cannot move the checkpoint.
CREATE TABLE IF NOT EXISTS relay_checkpoints (
    deployment  text        PRIMARY KEY,
    tx_id       xid8        NOT NULL,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
