-- VoiceMeter database roles. Run once per database as a superuser or a role with CREATEROLE,
-- after `voicemeter migrate` (again after migrations that add tables):
--   psql "$DATABASE_URL" -f deploy/roles.sql
-- Idempotent. The roles are NOLOGIN groups; give people and services login roles in them:
--   CREATE ROLE meter_server LOGIN PASSWORD '…' IN ROLE voicemeter_ingest;
--
--   voicemeter_owner    runs migrations, repricing and price/budget/token changes (owns the schema)
--   voicemeter_ingest   what `voicemeter serve` needs: insert events, upsert and fold rollups, register and end
--                       calls, write alerts, read prices/tokens/budgets; never UPDATE or DELETE events
--   voicemeter_finance  read-only: every table and view

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'voicemeter_owner') THEN CREATE ROLE voicemeter_owner NOLOGIN; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'voicemeter_ingest') THEN CREATE ROLE voicemeter_ingest NOLOGIN; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'voicemeter_finance') THEN CREATE ROLE voicemeter_finance NOLOGIN; END IF;
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO voicemeter_owner, voicemeter_ingest', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO voicemeter_finance', current_database());
END
$$;

GRANT USAGE, CREATE ON SCHEMA public TO voicemeter_owner;
GRANT ALL ON ALL TABLES IN SCHEMA public TO voicemeter_owner;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO voicemeter_owner;

GRANT USAGE ON SCHEMA public TO voicemeter_ingest, voicemeter_finance;

-- The server reads these.
GRANT SELECT ON schema_migrations, service_pricing, fixed_costs, ingest_tokens, user_budget_settings,
                usage_quotas, cost_summaries, rollup_journal, period_rollups, calls, api_call_events, cost_alerts,
                rejected_frames, call_owners, budget_grants
    TO voicemeter_ingest;
-- Events are append-only for the server: INSERT (… ON CONFLICT DO NOTHING), no UPDATE, no DELETE.
GRANT INSERT ON api_call_events, cost_alerts, rejected_frames TO voicemeter_ingest;
-- Rollups are upserted; calls are registered (again on resume: registrations; a refused call's
-- retry takes its new start) and later ended or cut off.
GRANT INSERT, UPDATE ON cost_summaries TO voicemeter_ingest;
-- Period deltas are journaled by each commit and deleted by the fold that adds them to the rollups.
GRANT INSERT, DELETE ON rollup_journal TO voicemeter_ingest;
GRANT INSERT ON calls, call_owners TO voicemeter_ingest;
-- Budget grants are taken, renewed and returned (take_budget_grant), and expired ones removed.
GRANT INSERT, UPDATE, DELETE ON budget_grants TO voicemeter_ingest;
GRANT UPDATE (started_at, registrations, ended_at, status, cutoff_reason, cutoff_at, updated_at) ON calls TO voicemeter_ingest;
GRANT UPDATE (current_amount, current_cost, last_updated) ON usage_quotas TO voicemeter_ingest;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO voicemeter_ingest;

-- Tables and views (call_margins, monthly_pnl, user_spend, …).
GRANT SELECT ON ALL TABLES IN SCHEMA public TO voicemeter_finance;
