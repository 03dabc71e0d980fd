-- user_spend as of any instant. The view (0006, 0010) keyed "today" and "this month" by the
-- database's clock; the server asks at its own clock's instant (one clock for a request), so
-- the periods come from a function of the instant, and the view is that function at now().
-- Periods are UTC calendar days and months.
DROP VIEW user_spend;

CREATE FUNCTION user_spend_at(instant timestamptz)
RETURNS TABLE (user_id text, call_limit numeric, spent_today numeric, day_limit numeric, remaining_today numeric,
               spent_this_month numeric, month_limit numeric, remaining_this_month numeric)
LANGUAGE sql STABLE AS $$
    WITH users AS (
        SELECT user_id FROM user_budget_settings
        UNION SELECT user_id FROM period_rollups WHERE summary_type IN ('user_day', 'user_month')
    )
    SELECT u.user_id,
           coalesce(b.max_cost_per_call, 10),
           coalesce(d.total_cost, 0),
           b.max_daily_spend,
           b.max_daily_spend - coalesce(d.total_cost, 0),
           coalesce(m.total_cost, 0),
           coalesce(b.max_monthly_spend, 100),
           coalesce(b.max_monthly_spend, 100) - coalesce(m.total_cost, 0)
    FROM users u
    LEFT JOIN user_budget_settings b ON b.user_id = u.user_id
    LEFT JOIN period_rollups d ON d.summary_type = 'user_day' AND d.user_id = u.user_id
          AND d.period_start = date_trunc('day', instant, 'UTC')
    LEFT JOIN period_rollups m ON m.summary_type = 'user_month' AND m.user_id = u.user_id
          AND m.period_start = date_trunc('month', instant, 'UTC')
$$;

CREATE VIEW user_spend AS SELECT * FROM user_spend_at(now());
