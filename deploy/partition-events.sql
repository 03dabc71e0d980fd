-- Partitions api_call_events by the month of call_started_at (native PostgreSQL partitioning),
-- so old months can be detached, archived or dropped whole and recent months stay small.
--
--   psql "$DATABASE_URL" -f deploy/partition-events.sql          (as voicemeter_owner, from the checkout)
--
-- It takes an exclusive lock on api_call_events and copies it: run it with the servers stopped or
-- expect their writers to wait (they retry; nothing is lost). The schema's keys already include
-- call_started_at, so the primary key and every index carry over. A DEFAULT partition catches any
-- month without a partition of its own, so no event is ever refused for its date. Afterwards,
-- create partitions ahead every month (cron, pg_cron or a systemd timer):
--
--   SELECT voicemeter_create_event_partitions(3);   -- this month and the next three
--
-- Tested here (PostgreSQL 15): converted a database holding simulated calls, then streamed more
-- calls through a server; counts, call summaries and finance views matched (see docs/operations.md).
\set ON_ERROR_STOP on
BEGIN;
LOCK TABLE api_call_events IN ACCESS EXCLUSIVE MODE;

CREATE TABLE api_call_events_by_month (LIKE api_call_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)
    PARTITION BY RANGE (call_started_at);
CREATE TABLE api_call_events_default PARTITION OF api_call_events_by_month DEFAULT;

CREATE OR REPLACE FUNCTION voicemeter_create_event_partitions(months_ahead integer, parent regclass DEFAULT 'api_call_events')
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month timestamptz := date_trunc('month', now(), 'UTC');
    created integer := 0;
    name text;
BEGIN
    FOR i IN 0..months_ahead LOOP
        name := 'api_call_events_' || to_char(month AT TIME ZONE 'UTC', 'YYYY_MM');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           name, parent, month, month + interval '1 month');
            created := created + 1;
        END IF;
        month := month + interval '1 month';
    END LOOP;
    RETURN created;
END $$;

-- A partition for every month that already has events, then the months ahead.
DO $$
DECLARE month timestamptz;
BEGIN
    FOR month IN SELECT DISTINCT date_trunc('month', call_started_at, 'UTC') FROM api_call_events LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF api_call_events_by_month FOR VALUES FROM (%L) TO (%L)',
                       'api_call_events_' || to_char(month AT TIME ZONE 'UTC', 'YYYY_MM'), month, month + interval '1 month');
    END LOOP;
END $$;
SELECT voicemeter_create_event_partitions(3, 'api_call_events_by_month');

INSERT INTO api_call_events_by_month SELECT * FROM api_call_events;
ALTER TABLE api_call_events RENAME TO api_call_events_unpartitioned;
ALTER TABLE api_call_events_by_month RENAME TO api_call_events;
-- Views bind to tables, not names: point call_margins (and through it monthly_pnl) at the new table.
\ir ../Migrations/0009_call_costs_from_events.sql
COMMIT;

-- If the database uses deploy/roles.sql, run it again now (the new table needs its grants).
-- Once satisfied (counts match), drop the copy:  DROP TABLE api_call_events_unpartitioned;
