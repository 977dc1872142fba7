-- Snapshots of aggregates whose streams grow without bound (a busy conversation's read
-- horizons). A snapshot is only a shortcut: state = snapshot + the stream's later events, and a
-- snapshot that no longer deserialises is ignored in favour of a full replay.
CREATE TABLE IF NOT EXISTS snapshots (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    last_sequence  bigint      NOT NULL,
    payload        jsonb       NOT NULL,
    -- The aggregate's state format; a snapshot of another version is ignored.
    version        integer     NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);
