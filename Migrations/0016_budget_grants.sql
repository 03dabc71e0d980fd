-- Budget grants (issue 22): a user's day and month budget held across nodes, as online charging
-- does it (RFC 4006 credit control). A metering core may let a user's calls spend only what it
-- holds here: `amount` is what it may still spend beyond what the ledger had committed when it
-- last wrote its row (its frames on their way to the ledger plus what it may still price).
-- Taking, topping up, shrinking, renewing and releasing a grant is one call of take_budget_grant,
-- which holds the user's lock while it reads the committed spend and the other holders' grants:
--
--   committed spend (rollups + journal) + every unexpired grant + the new extra <= the limit
--
-- is checked and written under that lock, so two cores can never be given the same money. A
-- commit raises the committed spend while the grant that covered it is still counted until its
-- holder next writes: the check errs on the side of the budget, never of the spender. A holder
-- that dies keeps its grant until expires_at (its lease); the next grant of that user deletes it.

-- Committed day and month spend of users at an instant: their folded rollups plus their journal
-- rows not folded yet, in one statement (one snapshot: a fold running meanwhile is seen entirely
-- or not at all). Users who spent nothing are absent.
CREATE FUNCTION users_period_spend(users text[], instant timestamptz)
RETURNS TABLE (user_id text, day numeric, month numeric)
LANGUAGE sql STABLE AS $$
    SELECT user_id, coalesce(sum(day), 0), coalesce(sum(month), 0) FROM (
        SELECT user_id, CASE summary_type WHEN 'user_day' THEN total_cost END AS day,
               CASE summary_type WHEN 'user_month' THEN total_cost END AS month
        FROM cost_summaries
        WHERE user_id = ANY(users)
          AND ((summary_type = 'user_day' AND period_start = date_trunc('day', instant, 'UTC'))
               OR (summary_type = 'user_month' AND period_start = date_trunc('month', instant, 'UTC')))
        UNION ALL
        SELECT user_id, CASE WHEN period_start = date_trunc('day', instant, 'UTC') THEN total_cost END, total_cost
        FROM rollup_journal
        WHERE user_id = ANY(users) AND date_trunc('month', period_start, 'UTC') = date_trunc('month', instant, 'UTC')
    ) AS spend GROUP BY user_id
$$;

CREATE TABLE budget_grants (
    user_id    text NOT NULL,
    -- One metering core of one server process (host, process, start, core).
    holder     text NOT NULL CHECK (length(holder) BETWEEN 1 AND 200),
    amount     numeric(30, 10) NOT NULL CHECK (amount > 0),
    granted_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, holder)
);

-- Sets the holder's grant to `keep` (what it holds now: its frames on their way plus what it may
-- still price) plus an extra of at most `want`, and at least `minimum` or nothing; renews the
-- lease. `keep` is held already and is not checked again, unless the holder's row expired (its
-- lease ran out: then only what fits is kept). Limits: the user's settings, else the defaults
-- given (NULL: no limit). Spend is counted in the UTC day and month containing `as_of`.
-- Returns the grant now held, the extra given, the committed spend, the other holders' grants,
-- the scope whose room was short when less than `want` was given, and how many expired grants
-- of the user were removed.
CREATE FUNCTION take_budget_grant(p_user text, p_holder text, p_keep numeric, p_want numeric, p_minimum numeric,
                                  p_default_day_limit numeric, p_default_month_limit numeric,
                                  p_as_of timestamptz, p_lease_seconds integer)
RETURNS TABLE (held numeric, extra numeric, day_spent numeric, month_spent numeric, others_held numeric,
               short_scope text, expired integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_day_limit numeric := p_default_day_limit;
    v_month_limit numeric := p_default_month_limit;
    v_held_before boolean;
    v_expired integer;
    v_day_room numeric;
    v_month_room numeric;
    v_room numeric;
    v_keep numeric;
    v_extra numeric;
BEGIN
    IF p_keep < 0 OR p_want < 0 OR p_minimum < 0 OR p_minimum > p_want OR p_lease_seconds < 1 THEN
        RAISE EXCEPTION 'take_budget_grant: keep, want and minimum must be >= 0, minimum <= want, lease >= 1 s'
            USING ERRCODE = '22023';
    END IF;
    -- Every grant change of a user runs under this lock, and each statement below reads what the
    -- previous holders of the lock committed (a volatile function takes a snapshot per statement).
    PERFORM pg_advisory_xact_lock(hashtextextended('voicemeter.budget_grants:' || p_user, 0));
    WITH gone AS (DELETE FROM budget_grants WHERE user_id = p_user AND expires_at <= now() RETURNING 1)
    SELECT count(*) INTO v_expired FROM gone;
    SELECT EXISTS (SELECT 1 FROM budget_grants WHERE user_id = p_user AND holder = p_holder) INTO v_held_before;
    SELECT coalesce(sum(amount), 0) INTO others_held FROM budget_grants WHERE user_id = p_user AND holder <> p_holder;
    SELECT coalesce(s.max_daily_spend, p_default_day_limit), coalesce(s.max_monthly_spend, p_default_month_limit)
      INTO v_day_limit, v_month_limit
      FROM (SELECT 1) AS one LEFT JOIN user_budget_settings s ON s.user_id = p_user;
    SELECT coalesce(max(sp.day), 0), coalesce(max(sp.month), 0) INTO day_spent, month_spent
      FROM users_period_spend(ARRAY[p_user], p_as_of) sp;
    v_day_room := v_day_limit - day_spent - others_held;
    v_month_room := v_month_limit - month_spent - others_held;
    v_room := least(v_day_room, v_month_room);  -- NULL only when neither limit is set
    v_keep := CASE WHEN v_held_before OR v_room IS NULL THEN p_keep ELSE least(p_keep, greatest(v_room, 0)) END;
    v_extra := CASE WHEN v_room IS NULL THEN p_want ELSE least(p_want, greatest(v_room - v_keep, 0)) END;
    IF v_extra < p_minimum THEN v_extra := 0; END IF;
    short_scope := CASE WHEN v_extra >= p_want THEN NULL
                        WHEN v_day_room IS NOT NULL AND (v_month_room IS NULL OR v_day_room <= v_month_room) THEN 'day'
                        ELSE 'month' END;
    held := v_keep + v_extra;
    extra := v_extra;
    IF held > 0 THEN
        INSERT INTO budget_grants AS g (user_id, holder, amount, expires_at)
        VALUES (p_user, p_holder, held, now() + make_interval(secs => p_lease_seconds))
        ON CONFLICT (user_id, holder) DO UPDATE SET amount = EXCLUDED.amount, granted_at = now(), expires_at = EXCLUDED.expires_at;
    ELSE
        DELETE FROM budget_grants WHERE user_id = p_user AND holder = p_holder;
    END IF;
    expired := v_expired;
    RETURN NEXT;
END
$$;

-- A database set up with deploy/roles.sql: the server's role takes and returns grants.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'voicemeter_ingest') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON budget_grants TO voicemeter_ingest;
        GRANT SELECT ON budget_grants TO voicemeter_finance;
        GRANT ALL ON budget_grants TO voicemeter_owner;
    END IF;
END $$;
