-- A rotated-in key is published (verifies) before it signs: every instance has reloaded it by
-- `activates_at`, so no instance meets a token signed with a key it does not know yet.
ALTER TABLE signing_keys ADD COLUMN IF NOT EXISTS activates_at timestamptz NOT NULL DEFAULT now();
