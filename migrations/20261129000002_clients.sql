-- Registered OAuth 2.0 clients. The secret is kept only as an Argon2 PHC string.
CREATE TABLE IF NOT EXISTS clients (
    client_id     text        PRIMARY KEY,
    secret_hash   text        NOT NULL,
    tenant_id     text        NOT NULL,
    user_id       text        NOT NULL,
    scopes        text[]      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);

-- Keys that sign access tokens. Every gateway instance signs with the newest active key and
-- verifies with any key not yet past `verify_until`, so keys rotate without refusing live tokens.
CREATE TABLE IF NOT EXISTS signing_keys (
    kid           text        PRIMARY KEY,
    algorithm     text        NOT NULL,
    private_der   bytea       NOT NULL,
    public_raw    bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    retired_at    timestamptz,
    verify_until  timestamptz
);

-- Responses to POSTs made with an Idempotency-Key, replayed for 24 h to the same principal.
CREATE TABLE IF NOT EXISTS idempotency_records (
    tenant_id        text        NOT NULL,
    principal        text        NOT NULL,
    idempotency_key  text        NOT NULL,
    request_hash     bytea       NOT NULL,
    status           smallint    NOT NULL,
    body             jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, principal, idempotency_key)
);
CREATE INDEX IF NOT EXISTS idempotency_records_created_at ON idempotency_records (created_at);
