-- Edges (issue 23): usage totals in the rollups had room for 10^15 units. A frame may report
-- 10^12, so a call or a day of the largest frames overflowed them: the writer's commit failed
-- (its last frame refused as bad data) and the fold failed, and retried, for every user after
-- that one. numeric without a precision holds any sum of the events' 9-decimal amounts exactly.
-- period_rollups reads these columns: it is dropped and created again from its own definition,
-- with its grants.
DO $$
DECLARE
    definition text := pg_get_viewdef('period_rollups'::regclass);
BEGIN
    DROP VIEW period_rollups;
    ALTER TABLE cost_summaries
        ALTER COLUMN total_duration_seconds TYPE numeric,
        ALTER COLUMN total_stt_seconds TYPE numeric,
        ALTER COLUMN total_ai_tokens TYPE numeric,
        ALTER COLUMN total_tts_characters TYPE numeric;
    ALTER TABLE rollup_journal
        ALTER COLUMN total_duration_seconds TYPE numeric,
        ALTER COLUMN total_stt_seconds TYPE numeric,
        ALTER COLUMN total_ai_tokens TYPE numeric,
        ALTER COLUMN total_tts_characters TYPE numeric;
    EXECUTE 'CREATE VIEW period_rollups AS ' || definition;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'voicemeter_ingest') THEN
        GRANT SELECT ON period_rollups TO voicemeter_ingest, voicemeter_finance;
        GRANT ALL ON period_rollups TO voicemeter_owner;
    END IF;
END $$;
