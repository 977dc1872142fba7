-- Gateways cache conversation memberships to spare every send a query; a membership change
-- tells them to forget that conversation. Membership changes are rare, so these notifications
-- never contend with the commit rate of messages (see events_notify for why that matters).
CREATE OR REPLACE FUNCTION events_membership_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chat4all_membership', NEW.aggregate_id);
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS events_membership_notify ON events;
CREATE TRIGGER events_membership_notify
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type = 'Conversation' AND NEW.event_type IN ('MemberJoined', 'MemberLeft'))
    EXECUTE FUNCTION events_membership_notify();
