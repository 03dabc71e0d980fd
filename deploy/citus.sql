-- Distributes VoiceMeter's tables over a Citus cluster by user_id (run on the coordinator, after
-- `voicemeter migrate`, before loading data):
--
--   psql "$COORDINATOR_URL" -f deploy/citus.sql
--
-- Why by user_id: a user's calls, events, rollups and budget rows then live on one worker, so the
-- ledger's transaction (events + rollups of one batch), the budget refresh (one user's day and
-- month rows) and per-call finance queries stay on one shard per user. Every unique key of these
-- tables includes user_id for this reason (Migrations/0001_schema_v1.sql).
--
-- Not tested here: Citus is not packaged in Debian 12 and this machine cannot reach the Citus
-- repository. What was checked here: every key below includes the distribution column, and the
-- ledger's statements name user_id in their conflict targets. Known limits to verify on a real
-- cluster: a writer batch mixes users, so its transaction spans shards (Citus runs it as a
-- distributed transaction with 2PC; batching per shard would avoid that); platform_day rollups
-- (user_id '') all land on one shard (folded from the journal, so upserted once per fold, not per
-- commit); the fold's sweep (a data-modifying CTE over the journal) and the finance views span
-- all shards and need checking on a real cluster. A batch with resends or conflicts is sorted by
-- whether each stored row's xmin is the committing transaction's id (EventStore.classify); on
-- Citus a row's xmin is its worker's, so that check must be replaced there (for instance by a
-- batch id column).
\set ON_ERROR_STOP on
CREATE EXTENSION IF NOT EXISTS citus;

-- Small, read-mostly tables every shard needs: copied to every worker.
SELECT create_reference_table('service_pricing');
SELECT create_reference_table('fixed_costs');
SELECT create_reference_table('ingest_tokens');
SELECT create_reference_table('usage_quotas');
SELECT create_reference_table('schema_migrations');
-- One owner per call id across all users (a unique key on call_id cannot live in calls).
SELECT create_reference_table('call_owners');

-- Per-user tables, co-located so joins and transactions by user stay on one worker.
SELECT create_distributed_table('calls', 'user_id');
SELECT create_distributed_table('api_call_events', 'user_id', colocate_with => 'calls');
SELECT create_distributed_table('cost_summaries', 'user_id', colocate_with => 'calls');
SELECT create_distributed_table('rollup_journal', 'user_id', colocate_with => 'calls');
SELECT create_distributed_table('user_budget_settings', 'user_id', colocate_with => 'calls');
-- take_budget_grant runs on the coordinator under a per-user advisory lock there.
SELECT create_distributed_table('budget_grants', 'user_id', colocate_with => 'calls');

-- cost_alerts (key: id; user_id may be NULL for platform alerts), rejected_frames and
-- cost_reconciliations stay on the coordinator as local tables: low volume, append-only.
