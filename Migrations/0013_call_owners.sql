-- Edges (issue 23): one owner per call id.
-- calls is keyed (user_id, call_id) so it can be distributed by user, and a unique key on call_id
-- alone cannot live there. call_owners holds it: a call.start claims its id here first, in the
-- registration's transaction, and a claim that finds another user's refuses the start before
-- anything is written. Two nodes registering one new id for two users at once: the second waits
-- on the first's key and is refused. (On Citus: a reference table, deploy/citus.sql.)
CREATE TABLE call_owners (
    call_id    text PRIMARY KEY CHECK (length(call_id) BETWEEN 1 AND 100),
    user_id    text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);

-- The calls so far: the first registration of each id owns it.
INSERT INTO call_owners (call_id, user_id, claimed_at)
SELECT DISTINCT ON (call_id) call_id, user_id, created_at FROM calls ORDER BY call_id, created_at, user_id;

-- Rows a refused registration left behind (another user's id, never an event): their revenue was
-- never earned, and monthly_pnl and the fixed-cost split counted it.
DELETE FROM calls c USING call_owners o
WHERE o.call_id = c.call_id AND o.user_id <> c.user_id
  AND NOT EXISTS (SELECT 1 FROM api_call_events e WHERE e.user_id = c.user_id AND e.call_id = c.call_id);

-- A database set up with deploy/roles.sql: the server's role registers calls here.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'voicemeter_ingest') THEN
        GRANT SELECT, INSERT ON call_owners TO voicemeter_ingest;
        GRANT SELECT ON call_owners TO voicemeter_finance;
        GRANT ALL ON call_owners TO voicemeter_owner;
    END IF;
END $$;
