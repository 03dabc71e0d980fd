-- One frame may report up to 10^12 units; at the dearest seed price that is more than the 10^10
-- USD that numeric(20, 10) holds, and a failed insert would stall the writer's whole batch. Costs
-- get 20 integer digits (scale unchanged: 1e-10 USD), so every frame the protocol accepts fits.
ALTER TABLE api_call_events ALTER COLUMN total_cost TYPE numeric(30, 10);
ALTER TABLE cost_summaries
    ALTER COLUMN twilio_cost TYPE numeric(30, 10),
    ALTER COLUMN deepgram_cost TYPE numeric(30, 10),
    ALTER COLUMN cerebras_cost TYPE numeric(30, 10),
    ALTER COLUMN openai_cost TYPE numeric(30, 10),
    ALTER COLUMN elevenlabs_cost TYPE numeric(30, 10),
    ALTER COLUMN other_cost TYPE numeric(30, 10),
    ALTER COLUMN total_cost TYPE numeric(30, 10);
ALTER TABLE cost_alerts ALTER COLUMN spent TYPE numeric(30, 10);
ALTER TABLE usage_quotas ALTER COLUMN current_cost TYPE numeric(30, 10);
