-- A call's costs in call_margins come from its events, not from its cost_summaries row: that
-- row is now written once, when the call ends (see Sources/VoiceMeterStore/Rollups.swift), so live calls
-- and calls whose server stopped before their end are still costed, to the last digit.
CREATE OR REPLACE VIEW call_margins AS
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
           coalesce(s.other_cost, 0) AS other_cost,
           coalesce(s.total_cost, 0) AS api_cost,
           f.payment_fee,
           trunc(m.fixed_costs / m.calls, 10)
               + CASE WHEN a.position = 1 THEN m.fixed_costs - trunc(m.fixed_costs / m.calls, 10) * m.calls ELSE 0 END AS fixed_cost_share
    FROM admitted a
    JOIN call_payment_fees f ON f.user_id = a.user_id AND f.call_id = a.call_id
    JOIN monthly_fixed_costs m ON m.month = a.month
    LEFT JOIN LATERAL (
        SELECT sum(e.total_cost) FILTER (WHERE e.service = 'twilio') AS twilio_cost,
               sum(e.total_cost) FILTER (WHERE e.service = 'deepgram') AS deepgram_cost,
               sum(e.total_cost) FILTER (WHERE e.service = 'cerebras') AS cerebras_cost,
               sum(e.total_cost) FILTER (WHERE e.service = 'elevenlabs') AS elevenlabs_cost,
               sum(e.total_cost) FILTER (WHERE e.service NOT IN ('twilio', 'deepgram', 'cerebras', 'elevenlabs')) AS other_cost,
               sum(e.total_cost) AS total_cost
        FROM api_call_events e WHERE e.call_id = a.call_id AND e.user_id = a.user_id
    ) s ON true
)
SELECT costed.*,
       api_cost + payment_fee + fixed_cost_share AS total_cost,
       revenue - (api_cost + payment_fee + fixed_cost_share) AS margin,
       CASE WHEN revenue > 0 THEN round((revenue - (api_cost + payment_fee + fixed_cost_share)) / revenue * 100, 2) END AS margin_pct
FROM costed;
