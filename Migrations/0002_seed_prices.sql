-- Prices from seed 002 section 1, in force from 2025-01-01 (UTC), keyed with the seed's own names.
-- Per-unit prices are USD per one unit of `unit`; quantities in seconds are converted to minutes.
-- Later changes close a version (effective_to) and open a new one: never edit these rows.

INSERT INTO service_pricing
    (service, operation, model, unit, pricing_type, unit_price, percent_fee, fixed_fee,
     billing_increment, effective_from, source, metadata)
VALUES
    -- Twilio: per minute, each call billed in whole minutes rounded up (increment 60 s).
    ('twilio', 'voice_outbound', '', 'minutes', 'per_unit', 0.014, 0, 0, 60, '2025-01-01T00:00:00Z', 'seed',
     '{"note": "US outbound, billed per call in whole minutes"}'),
    ('twilio', 'voice_inbound', '', 'minutes', 'per_unit', 0.0085, 0, 0, 60, '2025-01-01T00:00:00Z', 'seed',
     '{"note": "US inbound, billed per call in whole minutes"}'),

    -- Deepgram nova-2 streaming: $0.0059 per minute, billed by the second.
    ('deepgram', 'stt_streaming', 'nova-2', 'minutes', 'per_unit', 0.0059, 0, 0, 1, '2025-01-01T00:00:00Z', 'seed', NULL),

    -- Cerebras: Llama 3.1 8B and 70B per token, input and output combined; 405B split.
    ('cerebras', 'chat_completion', 'llama3.1-8b', 'tokens', 'per_unit', 0.0000001, 0, 0, NULL, '2025-01-01T00:00:00Z', 'seed',
     '{"per_million": "0.10"}'),
    ('cerebras', 'chat_completion', 'llama3.1-70b', 'tokens', 'per_unit', 0.0000006, 0, 0, NULL, '2025-01-01T00:00:00Z', 'seed',
     '{"per_million": "0.60"}'),
    ('cerebras', 'chat_completion', 'llama3.1-405b', 'input_tokens', 'per_unit', 0.000006, 0, 0, NULL, '2025-01-01T00:00:00Z', 'seed',
     '{"per_million": "6.00"}'),
    ('cerebras', 'chat_completion', 'llama3.1-405b', 'output_tokens', 'per_unit', 0.000012, 0, 0, NULL, '2025-01-01T00:00:00Z', 'seed',
     '{"per_million": "12.00"}'),

    -- OpenAI GPT-4 Turbo, the fallback when Cerebras is down: $10 / $30 per 1M input / output tokens.
    ('openai', 'chat_completion', 'gpt-4-turbo', 'input_tokens', 'per_unit', 0.00001, 0, 0, NULL, '2025-01-01T00:00:00Z', 'seed',
     '{"per_million": "10.00"}'),
    ('openai', 'chat_completion', 'gpt-4-turbo', 'output_tokens', 'per_unit', 0.00003, 0, 0, NULL, '2025-01-01T00:00:00Z', 'seed',
     '{"per_million": "30.00"}'),

    -- ElevenLabs: turbo v2.5 $0.15 and standard (multilingual v2) $0.30 per 1,000 characters.
    ('elevenlabs', 'tts_generation', 'eleven_turbo_v2_5', 'characters', 'per_unit', 0.00015, 0, 0, NULL, '2025-01-01T00:00:00Z', 'seed',
     '{"per_thousand": "0.15"}'),
    ('elevenlabs', 'tts_generation', 'eleven_multilingual_v2', 'characters', 'per_unit', 0.0003, 0, 0, NULL, '2025-01-01T00:00:00Z', 'seed',
     '{"per_thousand": "0.30", "tier": "standard"}'),

    -- Stripe card-not-present: 3.4% + $0.30 of the call's revenue, once per paid call.
    ('stripe', 'payment', 'card', 'transactions', 'percent_plus_fixed', 0, 3.4, 0.30, NULL, '2025-01-01T00:00:00Z', 'seed',
     '{"note": "card-not-present, 2025 rate"}');

-- Fixed monthly costs, amortized over the month's calls in finance views.
INSERT INTO fixed_costs (name, description, monthly_amount, effective_from) VALUES
    ('raindrop', 'Raindrop backend, Small tier', 20.00, '2025-01-01T00:00:00Z'),
    ('vultr', 'Vultr VPS hosting the voice pipeline and PostgreSQL', 6.00, '2025-01-01T00:00:00Z');
