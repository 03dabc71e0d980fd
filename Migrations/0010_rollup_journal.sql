-- The period rollups (user_day, user_month, platform_day) are no longer upserted by every ledger
-- commit. With 10,000 live calls each commit touched one user_day and one user_month row per event,
-- and those upserts were half of the database's time (pg_stat_statements, voicemeter-bench live).
-- Each commit now appends its deltas, one row per user and UTC day, to rollup_journal in its own
-- transaction; the server folds the journal into cost_summaries every few seconds (Rollups.fold,
-- one folder at a time), so a user's rows are updated once per fold instead of once per commit.
-- Nothing is lost or counted twice: a delta is in exactly one of the two tables at any snapshot.
-- Readers that must be exact read period_rollups (below) or, like the budget checks, add the
-- journal's rows themselves.
-- Columns typed like cost_summaries' (figures print the same folded or not).
CREATE TABLE rollup_journal (
    user_id                 text NOT NULL,
    period_start            timestamptz NOT NULL,  -- the UTC day the events occurred in
    twilio_cost             numeric(30, 10) NOT NULL,
    deepgram_cost           numeric(30, 10) NOT NULL,
    cerebras_cost           numeric(30, 10) NOT NULL,
    openai_cost             numeric(30, 10) NOT NULL,
    elevenlabs_cost         numeric(30, 10) NOT NULL,
    other_cost              numeric(30, 10) NOT NULL,
    total_cost              numeric(30, 10) NOT NULL,
    total_duration_seconds  numeric(24, 9) NOT NULL,
    total_stt_seconds       numeric(24, 9) NOT NULL,
    total_ai_tokens         numeric(24, 9) NOT NULL,
    total_tts_characters    numeric(24, 9) NOT NULL,
    event_count             bigint NOT NULL,
    unpriced_event_count    bigint NOT NULL
);
-- Budget checks read one user's unfolded spend at every call start.
CREATE INDEX rollup_journal_by_user ON rollup_journal (user_id, period_start);

-- The period rollups as of now: the folded rows plus the journal's rows not folded yet.
CREATE VIEW period_rollups AS
SELECT summary_type, user_id, period_start, max(period_end) AS period_end,
       sum(twilio_cost) AS twilio_cost, sum(deepgram_cost) AS deepgram_cost, sum(cerebras_cost) AS cerebras_cost,
       sum(openai_cost) AS openai_cost, sum(elevenlabs_cost) AS elevenlabs_cost, sum(other_cost) AS other_cost,
       sum(total_cost) AS total_cost, sum(total_duration_seconds) AS total_duration_seconds,
       sum(total_stt_seconds) AS total_stt_seconds, sum(total_ai_tokens) AS total_ai_tokens,
       sum(total_tts_characters) AS total_tts_characters, sum(event_count) AS event_count,
       sum(unpriced_event_count) AS unpriced_event_count
FROM (
    SELECT summary_type, user_id, period_start, period_end, twilio_cost, deepgram_cost, cerebras_cost, openai_cost,
           elevenlabs_cost, other_cost, total_cost, total_duration_seconds, total_stt_seconds, total_ai_tokens,
           total_tts_characters, event_count, unpriced_event_count
    FROM cost_summaries WHERE summary_type <> 'call'
    UNION ALL
    SELECT level.summary_type, level.user_id, level.period_start, level.period_end, j.twilio_cost, j.deepgram_cost,
           j.cerebras_cost, j.openai_cost, j.elevenlabs_cost, j.other_cost, j.total_cost, j.total_duration_seconds,
           j.total_stt_seconds, j.total_ai_tokens, j.total_tts_characters, j.event_count, j.unpriced_event_count
    FROM rollup_journal j
    CROSS JOIN LATERAL (VALUES
        ('user_day', j.user_id, j.period_start, j.period_start + interval '1 day'),
        ('user_month', j.user_id, date_trunc('month', j.period_start, 'UTC'), date_trunc('month', j.period_start, 'UTC') + interval '1 month'),
        ('platform_day', '', j.period_start, j.period_start + interval '1 day')
    ) AS level(summary_type, user_id, period_start, period_end)
) AS rows
GROUP BY summary_type, user_id, period_start;

-- user_spend (0006) reads the period rollups as of now.
CREATE OR REPLACE VIEW user_spend AS
WITH users AS (
    SELECT user_id FROM user_budget_settings
    UNION SELECT user_id FROM period_rollups WHERE summary_type IN ('user_day', 'user_month')
)
SELECT u.user_id,
       coalesce(b.max_cost_per_call, 10) AS call_limit,
       coalesce(d.total_cost, 0) AS spent_today,
       b.max_daily_spend AS day_limit,
       b.max_daily_spend - coalesce(d.total_cost, 0) AS remaining_today,
       coalesce(m.total_cost, 0) AS spent_this_month,
       coalesce(b.max_monthly_spend, 100) AS month_limit,
       coalesce(b.max_monthly_spend, 100) - coalesce(m.total_cost, 0) AS remaining_this_month
FROM users u
LEFT JOIN user_budget_settings b ON b.user_id = u.user_id
LEFT JOIN period_rollups d ON d.summary_type = 'user_day' AND d.user_id = u.user_id
      AND d.period_start = date_trunc('day', now(), 'UTC')
LEFT JOIN period_rollups m ON m.summary_type = 'user_month' AND m.user_id = u.user_id
      AND m.period_start = date_trunc('month', now(), 'UTC');
