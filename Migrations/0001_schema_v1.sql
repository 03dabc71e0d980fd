-- VoiceMeter schema v1.
--
-- Money is NUMERIC everywhere (USD unless a currency column says otherwise); no floating point.
-- Scales: prices carry 12 decimal places (enough for $0.0000001 per token), per-event and rolled-up
-- costs 10 (the pricing rule rounds each event half-even at 1e-10 USD), usage amounts 9.
--
-- Keys are chosen so that api_call_events can later be distributed by user_id (Citus) and
-- partitioned by month of call_started_at: every unique key of a per-user table includes user_id,
-- and the event key includes call_started_at. The server fixes user_id and call_started_at per call,
-- so (call_id, seq) stays the idempotency key.

-- Exclusion constraints on text columns need btree_gist (a trusted extension since PostgreSQL 13).
CREATE EXTENSION IF NOT EXISTS btree_gist;

-- Tables whose changes a running server must see within a second announce them on a channel
-- named after the table (LISTEN service_pricing, user_budget_settings, ingest_tokens, fixed_costs).
CREATE FUNCTION voicemeter_notify_table_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_NAME, TG_OP);
    RETURN NULL;
END;
$$;

-- ---------------------------------------------------------------------------------------------
-- service_pricing: versioned prices. A version is in force on [effective_from, effective_to).
-- The price key is (service, operation, model, unit); model '' is the service/operation default
-- used when no model-specific price exists. Two versions of one key can never overlap.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE service_pricing (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- the price version
    service           text NOT NULL CHECK (service ~ '^[a-z0-9_.-]{1,50}$'),
    operation         text NOT NULL CHECK (operation ~ '^[a-z0-9_.-]{1,100}$'),
    model             text NOT NULL DEFAULT '' CHECK (length(model) <= 100),
    unit              text NOT NULL CHECK (unit IN (
                          'seconds', 'minutes', 'tokens', 'input_tokens', 'cached_input_tokens',
                          'output_tokens', 'characters', 'requests', 'transactions')),
    -- 'per_unit': unit_price per unit of usage; 'percent_plus_fixed': a payment fee of
    -- percent_fee % of the charged amount plus fixed_fee, once per transaction.
    pricing_type      text NOT NULL DEFAULT 'per_unit' CHECK (pricing_type IN ('per_unit', 'percent_plus_fixed')),
    unit_price        numeric(24, 12) NOT NULL DEFAULT 0 CHECK (unit_price >= 0),
    percent_fee       numeric(9, 6) NOT NULL DEFAULT 0 CHECK (percent_fee >= 0 AND percent_fee <= 100),
    fixed_fee         numeric(24, 12) NOT NULL DEFAULT 0 CHECK (fixed_fee >= 0),
    -- Usage is billed per call in whole increments, rounded up; expressed in seconds for time units
    -- (Twilio: 60 = whole minutes) and in the unit itself otherwise. NULL: billed exactly.
    billing_increment numeric(24, 9) CHECK (billing_increment > 0),
    -- The least a call is billed for once it has any usage of this key (same units as the increment).
    minimum_billable  numeric(24, 9) CHECK (minimum_billable > 0),
    currency          char(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    effective_from    timestamptz NOT NULL,
    effective_to      timestamptz CHECK (effective_to IS NULL OR effective_to > effective_from),
    source            text NOT NULL DEFAULT 'manual' CHECK (source IN ('api', 'manual', 'inferred', 'seed', 'import')),
    last_verified     timestamptz,
    metadata          jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT service_pricing_no_overlap EXCLUDE USING gist (
        service WITH =, operation WITH =, model WITH =, unit WITH =,
        tstzrange(effective_from, effective_to, '[)') WITH &&
    ),
    CONSTRAINT service_pricing_fee_shape CHECK (
        (pricing_type = 'per_unit' AND percent_fee = 0 AND fixed_fee = 0)
        OR (pricing_type = 'percent_plus_fixed' AND unit_price = 0 AND unit = 'transactions'))
);
CREATE INDEX service_pricing_current ON service_pricing (service, operation, effective_from) WHERE effective_to IS NULL;

CREATE TRIGGER service_pricing_changed AFTER INSERT OR UPDATE OR DELETE ON service_pricing
    FOR EACH STATEMENT EXECUTE FUNCTION voicemeter_notify_table_changed();

-- ---------------------------------------------------------------------------------------------
-- calls: one row per call. call_id is unique across users (the server refuses a call_id that
-- belongs to another user); the key includes user_id so the table can be distributed by it.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE calls (
    user_id        text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 255),
    call_id        text NOT NULL CHECK (length(call_id) BETWEEN 1 AND 100),
    persona_id     text CHECK (length(persona_id) <= 50),
    started_at     timestamptz NOT NULL,
    ended_at       timestamptz CHECK (ended_at IS NULL OR ended_at >= started_at),
    status         text NOT NULL DEFAULT 'active'
                       CHECK (status IN ('active', 'completed', 'cut_off', 'abandoned', 'rejected')),
    revenue        numeric(14, 4) CHECK (revenue >= 0),
    currency       char(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    payment_method text NOT NULL DEFAULT 'card' CHECK (length(payment_method) BETWEEN 1 AND 50),
    cutoff_reason  text CHECK (cutoff_reason IN ('call_limit', 'day_limit', 'month_limit')),
    cutoff_at      timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, call_id)
);
CREATE INDEX calls_by_call_id ON calls (call_id);
CREATE INDEX calls_by_started_at ON calls (started_at);

-- ---------------------------------------------------------------------------------------------
-- api_call_events: every usage frame, priced or not. (call_id, seq) is the idempotency key;
-- payload_hash (SHA-256 of the frame's canonical content) tells a harmless resend from a
-- conflicting one. Unpriced usage has NULL price_id/unit_cost/total_cost and is repriced later.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE api_call_events (
    call_id         text NOT NULL,
    seq             bigint NOT NULL CHECK (seq >= 1),
    user_id         text NOT NULL,
    call_started_at timestamptz NOT NULL,         -- the call's start: the partition key by month
    persona_id      text,
    occurred_at     timestamptz NOT NULL,         -- the frame's ts: the price in force then applies
    created_at      timestamptz NOT NULL DEFAULT now(),
    service         text NOT NULL,
    operation       text NOT NULL,
    model           text,
    usage_amount    numeric(24, 9) NOT NULL CHECK (usage_amount >= 0),
    usage_unit      text NOT NULL,
    billed_amount   numeric(24, 9),               -- usage charged by this event after billing increments
    price_id        bigint REFERENCES service_pricing (id),
    unit_cost       numeric(24, 12),
    total_cost      numeric(20, 10),
    estimated       boolean NOT NULL DEFAULT true, -- false once verified against the provider's bill
    metadata        jsonb,
    external_id     text CHECK (length(external_id) <= 200),
    payload_hash    bytea NOT NULL CHECK (length(payload_hash) = 32),
    PRIMARY KEY (call_id, seq, user_id, call_started_at),
    CONSTRAINT api_call_events_priced_shape CHECK (
        (price_id IS NULL AND unit_cost IS NULL AND total_cost IS NULL)
        OR (price_id IS NOT NULL AND unit_cost IS NOT NULL AND total_cost IS NOT NULL))
);
CREATE INDEX api_call_events_by_user_time ON api_call_events (user_id, occurred_at);
CREATE INDEX api_call_events_unpriced ON api_call_events (occurred_at) WHERE price_id IS NULL;

-- ---------------------------------------------------------------------------------------------
-- cost_summaries: rollups, one row per key, maintained in the same transaction as the events
-- they count. Keys: ('call', user_id, call_id, call start), ('user_day', user_id, '', day),
-- ('user_month', user_id, '', month), ('platform_day', '', '', day). Periods are UTC.
-- Payment fees and fixed costs are not usage; finance views add them.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE cost_summaries (
    summary_type            text NOT NULL CHECK (summary_type IN ('call', 'user_day', 'user_month', 'platform_day')),
    user_id                 text NOT NULL DEFAULT '',
    call_id                 text NOT NULL DEFAULT '',
    period_start            timestamptz NOT NULL,
    period_end              timestamptz NOT NULL CHECK (period_end > period_start),
    twilio_cost             numeric(20, 10) NOT NULL DEFAULT 0,
    deepgram_cost           numeric(20, 10) NOT NULL DEFAULT 0,
    cerebras_cost           numeric(20, 10) NOT NULL DEFAULT 0,
    openai_cost             numeric(20, 10) NOT NULL DEFAULT 0,
    elevenlabs_cost         numeric(20, 10) NOT NULL DEFAULT 0,
    other_cost              numeric(20, 10) NOT NULL DEFAULT 0,
    total_cost              numeric(20, 10) NOT NULL DEFAULT 0,
    total_duration_seconds  numeric(24, 9) NOT NULL DEFAULT 0,  -- telephony time
    total_stt_seconds       numeric(24, 9) NOT NULL DEFAULT 0,
    total_ai_tokens         numeric(24, 9) NOT NULL DEFAULT 0,
    total_tts_characters    numeric(24, 9) NOT NULL DEFAULT 0,
    event_count             bigint NOT NULL DEFAULT 0,
    unpriced_event_count    bigint NOT NULL DEFAULT 0,
    call_count              bigint NOT NULL DEFAULT 0,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (summary_type, user_id, call_id, period_start),
    CONSTRAINT cost_summaries_key_shape CHECK (
        (summary_type = 'call' AND user_id <> '' AND call_id <> '')
        OR (summary_type IN ('user_day', 'user_month') AND user_id <> '' AND call_id = '')
        OR (summary_type = 'platform_day' AND user_id = '' AND call_id = ''))
);
CREATE INDEX cost_summaries_by_period ON cost_summaries (summary_type, period_start);

-- ---------------------------------------------------------------------------------------------
-- user_budget_settings (seed 002 section 6.1, plus a daily limit). NULL limits use the server's
-- defaults; a user with no row uses the defaults for everything.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE user_budget_settings (
    user_id                  text PRIMARY KEY CHECK (length(user_id) BETWEEN 1 AND 255),
    max_cost_per_call        numeric(14, 4) CHECK (max_cost_per_call >= 0),
    max_daily_spend          numeric(14, 4) CHECK (max_daily_spend >= 0),
    max_monthly_spend        numeric(14, 4) CHECK (max_monthly_spend >= 0),
    warn_at_percent_per_call integer CHECK (warn_at_percent_per_call BETWEEN 1 AND 100),
    enable_auto_cutoff       boolean,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER user_budget_settings_changed AFTER INSERT OR UPDATE OR DELETE ON user_budget_settings
    FOR EACH STATEMENT EXECUTE FUNCTION voicemeter_notify_table_changed();

-- ---------------------------------------------------------------------------------------------
-- usage_quotas (seed 002 section 2.2): platform-wide limits per service and period.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE usage_quotas (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service            text NOT NULL,
    quota_type         text NOT NULL CHECK (quota_type IN ('daily', 'monthly', 'account')),
    max_amount         numeric(24, 9) CHECK (max_amount > 0),
    max_cost           numeric(14, 4) CHECK (max_cost > 0),
    current_amount     numeric(24, 9) NOT NULL DEFAULT 0,
    current_cost       numeric(20, 10) NOT NULL DEFAULT 0,
    warning_threshold  numeric(5, 4) NOT NULL DEFAULT 0.80 CHECK (warning_threshold > 0 AND warning_threshold <= 1),
    critical_threshold numeric(5, 4) NOT NULL DEFAULT 0.95 CHECK (critical_threshold > 0 AND critical_threshold <= 1),
    period_start       timestamptz NOT NULL,
    period_end         timestamptz NOT NULL CHECK (period_end > period_start),
    last_updated       timestamptz NOT NULL DEFAULT now(),
    CHECK (max_amount IS NOT NULL OR max_cost IS NOT NULL),
    UNIQUE (service, quota_type, period_start)
);

-- ---------------------------------------------------------------------------------------------
-- cost_alerts: budget warnings and cutoffs, unpriced usage, quota alerts. Each insert is also
-- announced with NOTIFY cost_alerts (payload: the alert id).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE cost_alerts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    alert_type   text NOT NULL CHECK (alert_type IN (
                     'budget_warning', 'budget_cutoff', 'projected_exhaustion',
                     'unpriced_usage', 'quota_warning', 'quota_critical')),
    scope        text CHECK (scope IN ('call', 'day', 'month', 'platform')),
    user_id      text,
    call_id      text,
    service      text,
    spent        numeric(20, 10),
    limit_amount numeric(14, 4),
    percent      numeric(9, 4),
    message      text NOT NULL,
    data         jsonb
);
CREATE INDEX cost_alerts_by_time ON cost_alerts (created_at);
CREATE INDEX cost_alerts_by_user ON cost_alerts (user_id, created_at);

CREATE FUNCTION voicemeter_notify_cost_alert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cost_alerts', NEW.id::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER cost_alerts_announce AFTER INSERT ON cost_alerts
    FOR EACH ROW EXECUTE FUNCTION voicemeter_notify_cost_alert();

-- ---------------------------------------------------------------------------------------------
-- fixed_costs: monthly amounts (Raindrop, Vultr) amortized over the month's calls in finance
-- views, never in live budgets. Versioned like prices.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE fixed_costs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL CHECK (name ~ '^[a-z0-9_.-]{1,50}$'),
    description    text,
    monthly_amount numeric(14, 4) NOT NULL CHECK (monthly_amount >= 0),
    currency       char(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    effective_from timestamptz NOT NULL,
    effective_to   timestamptz CHECK (effective_to IS NULL OR effective_to > effective_from),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT fixed_costs_no_overlap EXCLUDE USING gist (
        name WITH =, tstzrange(effective_from, effective_to, '[)') WITH &&)
);
CREATE TRIGGER fixed_costs_changed AFTER INSERT OR UPDATE OR DELETE ON fixed_costs
    FOR EACH STATEMENT EXECUTE FUNCTION voicemeter_notify_table_changed();

-- ---------------------------------------------------------------------------------------------
-- ingest_tokens: bearer tokens for the stream (kind 'ingest') and the read API ('finance').
-- Only the SHA-256 of a token is stored; the token itself is shown once, at creation.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE ingest_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    kind         text NOT NULL DEFAULT 'ingest' CHECK (kind IN ('ingest', 'finance')),
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    token_prefix text NOT NULL,                   -- the first characters, to recognise a token in lists
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE TRIGGER ingest_tokens_changed AFTER INSERT OR UPDATE OR DELETE ON ingest_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION voicemeter_notify_table_changed();
