-- Reconciliation of the ledger's estimated costs against what providers report (seed 002 phase 3).
-- One row per reported cost; unmatched reports are kept, never dropped.
CREATE TABLE cost_reconciliations (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reconciled_at  timestamptz NOT NULL DEFAULT now(),
    source         text NOT NULL,
    call_id        text NOT NULL,
    user_id        text,                          -- NULL when no event of the call and service exists
    service        text NOT NULL,
    estimated_cost numeric(30, 10),              -- the ledger's sum for the call and service
    actual_cost    numeric(30, 10) NOT NULL,
    difference     numeric(30, 10),              -- actual − estimated
    matched        boolean NOT NULL
);
CREATE INDEX cost_reconciliations_by_call ON cost_reconciliations (call_id);
