-- Opaque refresh tokens, stored only as SHA-256 hashes. Every use rotates the token: the used one
-- is marked `rotated_at` and a new one joins its family. A rotated token presented again means
-- it leaked, so the whole family (and the access tokens it bought) is revoked.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash         bytea       PRIMARY KEY,
    family_id          uuid        NOT NULL,
    client_id          text        NOT NULL REFERENCES clients (client_id),
    scopes             text[]      NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    rotated_at         timestamptz,
    revoked_at         timestamptz,
    -- The access token issued with this refresh token, revoked with the family.
    access_jti         text,
    access_expires_at  bigint
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX IF NOT EXISTS refresh_tokens_expires_at ON refresh_tokens (expires_at);
