-- Finance views (seed 002 sections 2.4, 3 and 6), readable by the voicemeter_finance role.
-- Everything reconciles with the ledger to the last digit: a call's api_cost is its events' sum
-- (through its `call` rollup), and a month's fixed costs are split over its calls so that the
-- shares add up exactly (the remainder of the division goes to the month's first call).

-- The payment fee of each paid call: the payment price in force at the call's start, once.
CREATE VIEW call_payment_fees AS
SELECT c.user_id, c.call_id,
       CASE WHEN coalesce(c.revenue, 0) > 0 AND p.id IS NOT NULL
            THEN round(c.revenue * p.percent_fee / 100 + p.fixed_fee, 10) ELSE 0 END AS payment_fee
FROM calls c
LEFT JOIN service_pricing p
       ON p.service = 'stripe' AND p.operation = 'payment' AND p.model = c.payment_method AND p.unit = 'transactions'
      AND p.pricing_type = 'percent_plus_fixed'
      AND p.effective_from <= c.started_at AND (p.effective_to IS NULL OR c.started_at < p.effective_to)
WHERE c.status <> 'rejected';

-- Each month's fixed costs (versions overlapping the month) and its admitted calls.
CREATE VIEW monthly_fixed_costs AS
WITH months AS (
    SELECT date_trunc('month', started_at, 'UTC') AS month, count(*) AS calls
    FROM calls WHERE status <> 'rejected' GROUP BY 1
)
SELECT m.month, m.calls,
       coalesce((SELECT sum(f.monthly_amount) FROM fixed_costs f
                 WHERE f.effective_from < m.month + interval '1 month'
                   AND (f.effective_to IS NULL OR f.effective_to > m.month)), 0) AS fixed_costs
FROM months m;

CREATE VIEW call_margins AS
WITH admitted AS (
    SELECT c.*, date_trunc('month', c.started_at, 'UTC') AS month,
           row_number() OVER (PARTITION BY date_trunc('month', c.started_at, 'UTC') ORDER BY c.started_at, c.call_id) AS position
    FROM calls c WHERE c.status <> 'rejected'
), costed AS (
    SELECT a.call_id, a.user_id, a.persona_id, a.started_at, a.ended_at,
           extract(epoch FROM a.ended_at - a.started_at)::numeric AS duration_seconds,
           a.status, coalesce(a.revenue, 0) AS revenue, a.currency,
           coalesce(s.twilio_cost, 0) AS twilio_cost, coalesce(s.deepgram_cost, 0) AS deepgram_cost,
           coalesce(s.cerebras_cost, 0) AS cerebras_cost, coalesce(s.elevenlabs_cost, 0) AS elevenlabs_cost,
           coalesce(s.openai_cost, 0) + coalesce(s.other_cost, 0) AS other_cost,
           coalesce(s.total_cost, 0) AS api_cost,
           f.payment_fee,
           trunc(m.fixed_costs / m.calls, 10)
               + CASE WHEN a.position = 1 THEN m.fixed_costs - trunc(m.fixed_costs / m.calls, 10) * m.calls ELSE 0 END AS fixed_cost_share
    FROM admitted a
    JOIN call_payment_fees f ON f.user_id = a.user_id AND f.call_id = a.call_id
    JOIN monthly_fixed_costs m ON m.month = a.month
    LEFT JOIN cost_summaries s ON s.summary_type = 'call' AND s.user_id = a.user_id AND s.call_id = a.call_id
)
SELECT costed.*,
       api_cost + payment_fee + fixed_cost_share AS total_cost,
       revenue - (api_cost + payment_fee + fixed_cost_share) AS margin,
       CASE WHEN revenue > 0 THEN round((revenue - (api_cost + payment_fee + fixed_cost_share)) / revenue * 100, 2) END AS margin_pct
FROM costed;

CREATE VIEW monthly_pnl AS
WITH totals AS (
    SELECT date_trunc('month', started_at, 'UTC') AS month, count(*) AS calls, sum(revenue) AS revenue,
           sum(twilio_cost) AS twilio_cost, sum(deepgram_cost) AS deepgram_cost, sum(cerebras_cost) AS cerebras_cost,
           sum(elevenlabs_cost) AS elevenlabs_cost, sum(other_cost) AS other_cost, sum(api_cost) AS api_cost,
           sum(payment_fee) AS payment_fees, sum(fixed_cost_share) AS fixed_costs
    FROM call_margins GROUP BY 1
)
SELECT t.*,
       revenue - api_cost - payment_fees - fixed_costs AS gross_profit,
       CASE WHEN revenue > 0 THEN round((revenue - api_cost - payment_fees - fixed_costs) / revenue * 100, 2) END AS margin_pct,
       round((api_cost + payment_fees) / calls, 10) AS average_variable_cost_per_call,
       round((api_cost + payment_fees + fixed_costs) / calls, 10) AS average_cost_per_call,
       -- Seed 002 section 3.2: fixed costs / (average revenue − average variable cost).
       CASE WHEN revenue - api_cost - payment_fees > 0
            THEN ceil(fixed_costs / ((revenue - api_cost - payment_fees) / calls)) END AS break_even_calls
FROM totals t;

-- Per user: spend today and this month (UTC) against the limits; the defaults here mirror the
-- server's (seed 002: $10 per call, $100 per month, no daily limit).
CREATE VIEW user_spend AS
WITH users AS (
    SELECT user_id FROM user_budget_settings
    UNION SELECT user_id FROM cost_summaries WHERE summary_type IN ('user_day', 'user_month')
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
LEFT JOIN cost_summaries d ON d.summary_type = 'user_day' AND d.user_id = u.user_id AND d.call_id = ''
      AND d.period_start = date_trunc('day', now(), 'UTC')
LEFT JOIN cost_summaries m ON m.summary_type = 'user_month' AND m.user_id = u.user_id AND m.call_id = ''
      AND m.period_start = date_trunc('month', now(), 'UTC');
