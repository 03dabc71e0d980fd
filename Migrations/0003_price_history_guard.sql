-- Measured (voicemeter-bench ledger): the foreign key api_call_events.price_id → service_pricing
-- cost about a quarter of the ledger's insert throughput (one index probe per event). The same
-- integrity is kept more cheaply: price versions are history and are never deleted (a version is
-- closed by setting effective_to), so a recorded price_id can never dangle.

ALTER TABLE api_call_events DROP CONSTRAINT api_call_events_price_id_fkey;

CREATE FUNCTION voicemeter_refuse_price_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'price versions are history and cannot be deleted'
        USING ERRCODE = 'restrict_violation',
              HINT = 'close a version by setting effective_to (voicemeter pricing set opens the next one)';
END;
$$;

CREATE TRIGGER service_pricing_no_delete BEFORE DELETE ON service_pricing
    FOR EACH ROW EXECUTE FUNCTION voicemeter_refuse_price_delete();
CREATE TRIGGER service_pricing_no_truncate BEFORE TRUNCATE ON service_pricing
    FOR EACH STATEMENT EXECUTE FUNCTION voicemeter_refuse_price_delete();
