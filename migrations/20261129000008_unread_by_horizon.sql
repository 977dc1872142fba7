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

-- A membership lookup names all three key columns; with the user's index also ending in the
-- conversation, whichever index the planner picks (before statistics exist, as in a rebuild) finds
-- the row directly instead of walking all of the user's memberships. The old index is found by its
-- columns, since a rebuild may have renamed it.
DO $$
DECLARE
    old_index text;
BEGIN
    FOR old_index IN
        SELECT i.indexrelid::regclass::text
          FROM pg_index i
         WHERE i.indrelid = 'rm_members'::regclass
           AND NOT i.indisprimary
           AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
                  FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
               = ARRAY['tenant_id', 'user_id']
    LOOP
        EXECUTE 'DROP INDEX ' || old_index;
    END LOOP;
END $$;
CREATE INDEX IF NOT EXISTS rm_members_by_user ON rm_members (tenant_id, user_id, conversation_id);

-- A message's acceptance is its row in rm_messages; the history keeps what happened after it
-- (one row less to write per message).
DELETE FROM rm_message_history WHERE status = 'accepted';
