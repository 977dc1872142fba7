-- Unread counts follow from the read horizon instead of being counted up for every member on
-- every message (which cost a row write per member per message, ruinous in large groups):
-- messages are numbered densely, so a member's unread count is
--   last_seq - last_read_seq - (the member's own messages after the horizon),
-- and a message changes only its sender's row.
ALTER TABLE rm_members ADD COLUMN IF NOT EXISTS own_since_read bigint NOT NULL DEFAULT 0;

-- Existing rows keep the count they show.
UPDATE rm_members m
   SET own_since_read = greatest(c.last_seq - m.last_read_seq - m.unread_count, 0)
  FROM rm_conversations c
 WHERE c.tenant_id = m.tenant_id AND c.conversation_id = m.conversation_id;

ALTER TABLE rm_members DROP COLUMN IF EXISTS unread_count;
