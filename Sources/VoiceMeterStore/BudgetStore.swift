import PostgresClient
import VoiceMeterDomain

/// `user_budget_settings`, the spend the rollups hold, and `cost_alerts`.
public struct BudgetStore {
    private let connection: PostgresConnection
    /// Calls averaged for a user's expected call cost.
    public static let trailingCalls = 20

    public init(connection: PostgresConnection) {
        self.connection = connection
    }

    /// Stored settings of several users, by user (users without a row are absent: all defaults).
    public func settings(of userIDs: [String]) throws -> [String: BudgetSettings] {
        guard !userIDs.isEmpty else { return [:] }
        var settings: [String: BudgetSettings] = [:]
        for row in try connection.query("""
            SELECT user_id, max_cost_per_call, max_daily_spend, max_monthly_spend, warn_at_percent_per_call, enable_auto_cutoff
            FROM user_budget_settings WHERE user_id = ANY($1::text[])
            """, [PostgresTextArray(userIDs)]) {
            settings[try row.decode("user_id")] = BudgetSettings(
                callLimit: try row.decodeIfPresent("max_cost_per_call"), dayLimit: try row.decodeIfPresent("max_daily_spend"),
                monthLimit: try row.decodeIfPresent("max_monthly_spend"), warnPercent: try row.decodeIfPresent("warn_at_percent_per_call"),
                autoCutoff: try row.decodeIfPresent("enable_auto_cutoff")
            )
        }
        return settings
    }

    /// Upserts a user's settings; `nil` fields keep their stored value.
    public func update(_ userID: String, with changes: BudgetSettings) throws {
        try connection.query("""
            INSERT INTO user_budget_settings (user_id, max_cost_per_call, max_daily_spend, max_monthly_spend,
                                              warn_at_percent_per_call, enable_auto_cutoff)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (user_id) DO UPDATE SET
                max_cost_per_call = coalesce(EXCLUDED.max_cost_per_call, user_budget_settings.max_cost_per_call),
                max_daily_spend = coalesce(EXCLUDED.max_daily_spend, user_budget_settings.max_daily_spend),
                max_monthly_spend = coalesce(EXCLUDED.max_monthly_spend, user_budget_settings.max_monthly_spend),
                warn_at_percent_per_call = coalesce(EXCLUDED.warn_at_percent_per_call, user_budget_settings.warn_at_percent_per_call),
                enable_auto_cutoff = coalesce(EXCLUDED.enable_auto_cutoff, user_budget_settings.enable_auto_cutoff),
                updated_at = now()
            """, [userID, changes.callLimit, changes.dayLimit, changes.monthLimit, changes.warnPercent, changes.autoCutoff])
    }

    /// Committed day and month spend of several users at `instant`, by user (absent users spent
    /// nothing): their folded rollups plus their journal rows not folded yet, read in one statement
    /// (`users_period_spend`: one snapshot, so a fold running meanwhile is seen entirely or not at all).
    public func spend(of userIDs: [String], at instant: Timestamp) throws -> [String: (day: ExactDecimal, month: ExactDecimal)] {
        guard !userIDs.isEmpty else { return [:] }
        var spend: [String: (day: ExactDecimal, month: ExactDecimal)] = [:]
        for row in try connection.query("SELECT user_id, day, month FROM users_period_spend($1::text[], $2)",
                                        [PostgresTextArray(userIDs), instant]) {
            spend[try row.decode("user_id")] = (try row.decode("day"), try row.decode("month"))
        }
        return spend
    }

    /// Settings and committed spend of several users at `instant` (two queries, whatever their number).
    public func snapshots(of userIDs: [String], at instant: Timestamp) throws -> [String: UserBudgetSnapshot] {
        let spend = try spend(of: userIDs, at: instant)
        let settings = try settings(of: userIDs)
        return Dictionary(userIDs.map { user in
            let spent = spend[user] ?? (.zero, .zero)
            return (user, UserBudgetSnapshot(settings: settings[user] ?? BudgetSettings(), daySpent: spent.day, monthSpent: spent.month))
        }, uniquingKeysWith: { first, _ in first })
    }

    /// One user's settings, committed spend and trailing average call cost (for admission).
    public func snapshot(of userID: String, at instant: Timestamp) throws -> UserBudgetSnapshot {
        var snapshot = try snapshots(of: [userID], at: instant)[userID]!
        let average = try connection.query("""
            SELECT avg(total_cost)::numeric(20, 10) AS average FROM (
                SELECT total_cost FROM cost_summaries WHERE summary_type = 'call' AND user_id = $1 AND event_count > 0
                ORDER BY period_start DESC LIMIT $2) recent
            """, [userID, Self.trailingCalls]).single()
        snapshot.averageCallCost = try average.decodeIfPresent("average")
        return snapshot
    }

    /// Sets what `holder` (one metering core) holds of the user's budget, atomically against
    /// every other holder (`take_budget_grant`, Migrations/0016).
    public func takeGrant(_ request: GrantRequest, holder: String) throws -> GrantAnswer {
        let row = try connection.query("""
            SELECT held, extra, day_spent, month_spent, others_held, short_scope, expired
            FROM take_budget_grant($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """, [request.userID, holder, request.keep, request.want, request.minimum, request.defaultDayLimit, request.defaultMonthLimit,
                  request.asOf, Int(request.leaseSeconds)]).single()
        let scope: String? = try row.decodeIfPresent("short_scope")
        return GrantAnswer(held: try row.decode("held"), extra: try row.decode("extra"), daySpent: try row.decode("day_spent"),
                           monthSpent: try row.decode("month_spent"), othersHeld: try row.decode("others_held"),
                           shortScope: scope.flatMap(BudgetScope.init(rawValue:)), expired: try row.decode("expired"))
    }

    /// Extends the leases of `holder`'s grants of these users, one statement for all of them:
    /// only grants whose lease still runs (one that ran out may be counted as free by another
    /// holder already; its holder asks again with `takeGrant`). Amounts do not change, so no
    /// spend is read. Returns the users whose grant was extended.
    public func renewGrants(_ renewal: GrantRenewal, holder: String) throws -> Set<String> {
        var renewed: Set<String> = []
        for row in try connection.query("""
            UPDATE budget_grants SET expires_at = now() + make_interval(secs => $3)
            WHERE holder = $1 AND user_id = ANY($2::text[]) AND expires_at > now()
            RETURNING user_id
            """, [holder, PostgresTextArray(renewal.userIDs), Int(renewal.leaseSeconds)]) {
            renewed.insert(try row.decode("user_id"))
        }
        return renewed
    }

    /// One holder's grant of a user's budget as the ledger keeps it.
    public struct HeldGrant: Sendable {
        public var holder: String
        public var amount: ExactDecimal
        public var expiresAt: Timestamp
        /// Whether its lease ran out (its holder stopped renewing it: it is removed by the next grant).
        public var expired: Bool
    }

    /// The grants held of a user's budget, by holder.
    public func grants(of userID: String) throws -> [HeldGrant] {
        try connection.query("""
            SELECT holder, amount, expires_at, expires_at <= now() AS expired FROM budget_grants WHERE user_id = $1 ORDER BY holder
            """, [userID]).map { row in
            HeldGrant(holder: try row.decode("holder"), amount: try row.decode("amount"), expiresAt: try row.decode("expires_at"),
                      expired: try row.decode("expired"))
        }
    }

    public func record(_ alert: CostAlert) throws {
        try connection.query("""
            INSERT INTO cost_alerts (alert_type, scope, user_id, call_id, spent, limit_amount, percent, message)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            """, [alert.type, alert.scope, alert.userID, alert.callID, alert.spent, alert.limit, alert.percent, alert.message])
    }

    /// Platform quotas (seed 002 section 6.2): refreshes `usage_quotas.current_cost` of the quotas in
    /// force at `instant` from the platform rollups (folded or not) and raises `quota_warning` / `quota_critical`
    /// alerts, each once per quota and period (so several server processes do not repeat them).
    /// Quotas are evaluated on cost; `max_amount` is not evaluated yet.
    public func evaluateQuotas(at instant: Timestamp) throws {
        try connection.query("""
            WITH current AS (
                SELECT q.id, q.service, q.quota_type, q.max_cost, q.warning_threshold, q.critical_threshold, q.period_start,
                       coalesce((SELECT sum(CASE q.service WHEN 'twilio' THEN s.twilio_cost WHEN 'deepgram' THEN s.deepgram_cost
                                                           WHEN 'cerebras' THEN s.cerebras_cost WHEN 'openai' THEN s.openai_cost
                                                           WHEN 'elevenlabs' THEN s.elevenlabs_cost ELSE s.other_cost END)
                                 FROM period_rollups s
                                 WHERE s.summary_type = 'platform_day' AND s.period_start >= q.period_start AND s.period_start < q.period_end), 0) AS cost
                FROM usage_quotas q
                WHERE q.period_start <= $1 AND q.period_end > $1 AND q.max_cost IS NOT NULL
            ), refreshed AS (
                UPDATE usage_quotas u SET current_cost = c.cost, last_updated = now() FROM current c WHERE u.id = c.id RETURNING u.id
            )
            INSERT INTO cost_alerts (alert_type, scope, service, spent, limit_amount, percent, message, data)
            SELECT l.level, 'platform', c.service, c.cost, c.max_cost, round(c.cost / c.max_cost * 100, 4),
                   c.service || ' ' || c.quota_type || ' quota at ' || round(c.cost / c.max_cost * 100, 1) || '% ('
                       || c.cost || ' of ' || c.max_cost || ' USD)',
                   jsonb_build_object('quota_id', c.id, 'period_start', c.period_start)
            FROM current c
            CROSS JOIN LATERAL (VALUES ('quota_critical', c.critical_threshold), ('quota_warning', c.warning_threshold)) AS l(level, threshold)
            WHERE c.cost >= c.max_cost * l.threshold
              AND NOT EXISTS (SELECT 1 FROM cost_alerts a
                              WHERE a.alert_type = l.level AND a.data = jsonb_build_object('quota_id', c.id, 'period_start', c.period_start))
            """, [instant])
    }

    /// Keeps a frame that belongs to no known call, for audit.
    public func recordRejected(callID: String, seq: Int64?, reason: String, payloadJSON: String) throws {
        try connection.query("INSERT INTO rejected_frames (call_id, seq, reason, payload) VALUES ($1, $2, $3, $4::jsonb)",
                             [callID, seq, reason, payloadJSON])
    }

    /// Marks a live call refused at admission, cut off, or active again (a lifted cutoff); an ended
    /// call keeps its status. With `onlyIfGeneration`: only while the call has been registered that many times.
    public func markCall(userID: String, callID: String, status: String, cutoffReason: String?, onlyIfGeneration: Int64? = nil) throws {
        try connection.query("""
            UPDATE calls SET status = $3, cutoff_reason = coalesce($4, cutoff_reason),
                             cutoff_at = CASE WHEN $4::text IS NULL THEN cutoff_at ELSE now() END, updated_at = now()
            WHERE user_id = $1 AND call_id = $2 AND ended_at IS NULL AND ($5::bigint IS NULL OR registrations = $5)
            """, [userID, callID, status, cutoffReason, onlyIfGeneration])
    }
}
