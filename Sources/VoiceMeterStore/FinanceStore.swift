import PostgresClient
import VoiceMeterDomain

/// Rows of a finance report: column names and text values exactly as PostgreSQL printed them
/// (NUMERIC stays exact; NULL is `nil`).
public struct ReportRows: Sendable {
    public var columns: [String]
    public var rows: [[String?]]

    public init(columns: [String], rows: [[String?]]) {
        self.columns = columns
        self.rows = rows
    }
}

extension ReportRows {
    /// One JSON object per row; values stay strings (exact decimals), NULL is `null`.
    public var objects: [JSONValue] {
        rows.map { row in JSONValue.object(zip(columns, row).map { ($0, $1.map(JSONValue.string) ?? .null) }) }
    }

    /// `objects` as a JSON array.
    public var json: String { JSONValue.array(objects).serialized }

    /// RFC 4180 CSV with a header row. A cell a spreadsheet would run as a formula (text starting
    /// with `=`, `+`, `-`, `@`, a tab or a carriage return, such as a client's `user_id`) gets a
    /// leading `'` (OWASP's CSV-injection advice); numbers, negative ones too, stay as they are.
    public var csv: String {
        func field(_ given: String?) -> String {
            guard var value = given else { return "" }
            if let first = value.first, "=+-@\t\r".contains(first), ExactDecimal(value) == nil { value = "'" + value }
            guard value.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return value }
            return "\"" + value.split(separator: "\"", omittingEmptySubsequences: false).joined(separator: "\"\"") + "\""
        }
        return ([columns.map(field)] + rows.map { $0.map(field) }).map { $0.joined(separator: ",") }.joined(separator: "\r\n") + "\r\n"
    }
}

/// Reads the finance views (`call_margins`, `monthly_pnl`, `user_spend`) and a call's events.
public struct FinanceStore {
    private let connection: PostgresConnection

    public init(connection: PostgresConnection) {
        self.connection = connection
    }

    /// A call's events, oldest `seq` first.
    public func callEvents(_ callID: String) throws -> ReportRows {
        try report("""
            SELECT seq, to_char(occurred_at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS occurred_at, service, operation, coalesce(model, '') AS model,
                   usage_amount::text || ' ' || usage_unit AS usage, unit_cost, total_cost,
                   CASE WHEN price_id IS NULL THEN 'unpriced' ELSE 'price ' || price_id END AS pricing
            FROM api_call_events WHERE call_id = $1 ORDER BY seq
            """, [callID])
    }

    /// One call's margin row (empty when the call is unknown or was refused).
    public func callMargin(_ callID: String) throws -> ReportRows {
        try report("""
            SELECT call_id, user_id, revenue, twilio_cost, deepgram_cost, cerebras_cost, elevenlabs_cost, other_cost, api_cost,
                   payment_fee, fixed_cost_share, total_cost, margin, margin_pct
            FROM call_margins WHERE call_id = $1
            """, [callID])
    }

    /// Calls started in [from, to), optionally of one user.
    public func margins(from: Timestamp, to: Timestamp, userID: String?) throws -> ReportRows {
        try margins(where: "started_at >= $1 AND started_at < $2 AND ($3::text IS NULL OR user_id = $3)", [from, to, userID])
    }

    /// The margins of these calls (those that were admitted).
    public func margins(ofCalls callIDs: [String]) throws -> ReportRows {
        try margins(where: "call_id = ANY($1::text[])", [PostgresTextArray(callIDs)])
    }

    private func margins(where condition: String, _ parameters: [any PostgresEncodable]) throws -> ReportRows {
        try report("""
            SELECT call_id, user_id, to_char(started_at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS started_at, duration_seconds, status,
                   revenue, api_cost, payment_fee, fixed_cost_share, total_cost, margin, margin_pct
            FROM call_margins WHERE \(condition)
            ORDER BY started_at, call_id
            """, parameters)
    }

    /// The P&L of the month starting at `month`.
    public func month(_ month: Timestamp) throws -> ReportRows {
        try report("""
            SELECT to_char(month, 'YYYY-MM') AS month, calls, revenue, twilio_cost, deepgram_cost, cerebras_cost, elevenlabs_cost,
                   other_cost, api_cost, payment_fees, fixed_costs, gross_profit, margin_pct, average_cost_per_call, break_even_calls
            FROM monthly_pnl WHERE month = $1
            """, [month])
    }

    /// Every month's P&L, newest first.
    public func months() throws -> ReportRows {
        try report("""
            SELECT to_char(month, 'YYYY-MM') AS month, calls, revenue, api_cost, payment_fees, fixed_costs, gross_profit, margin_pct,
                   average_cost_per_call, break_even_calls
            FROM monthly_pnl ORDER BY month DESC
            """, [])
    }

    /// A user's spend on the UTC day and month of `instant` against the limits.
    public func userSpend(_ userID: String, at instant: Timestamp) throws -> ReportRows {
        try report("SELECT * FROM user_spend_at($2) WHERE user_id = $1", [userID, instant])
    }

    /// Margin per call over the `days` days before `instant`, oldest first (at most 2,000 calls).
    public func marginSeries(days: Int, before instant: Timestamp) throws -> ReportRows {
        try report("""
            SELECT to_char(started_at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS started_at, call_id, margin FROM call_margins
            WHERE started_at >= $2::timestamptz - make_interval(days => $1) AND started_at <= $2 ORDER BY started_at DESC LIMIT 2000
            """, [days, instant])
    }

    /// The platform's daily cost by service over the `days` UTC days before `instant`'s, and
    /// its own, oldest first.
    public func dailyCosts(days: Int, before instant: Timestamp) throws -> ReportRows {
        try report("""
            SELECT to_char(period_start, 'YYYY-MM-DD') AS day, twilio_cost AS twilio, deepgram_cost AS deepgram,
                   cerebras_cost AS cerebras, elevenlabs_cost AS elevenlabs, openai_cost + other_cost AS other
            FROM period_rollups WHERE summary_type = 'platform_day'
              AND period_start >= date_trunc('day', $2::timestamptz, 'UTC') - make_interval(days => $1) AND period_start <= $2
            ORDER BY period_start
            """, [days, instant])
    }

    /// Users at 80% or more of their limit for the UTC day or month of `instant`.
    public func usersNearLimits(at instant: Timestamp) throws -> ReportRows {
        try report("""
            SELECT user_id, spent_today, day_limit, spent_this_month, month_limit FROM user_spend_at($1)
            WHERE spent_this_month >= month_limit * 0.8 OR (day_limit IS NOT NULL AND spent_today >= day_limit * 0.8)
            ORDER BY spent_this_month DESC LIMIT 20
            """, [instant])
    }

    /// The latest alerts.
    public func recentAlerts(limit: Int) throws -> ReportRows {
        try report("""
            SELECT to_char(created_at, 'YYYY-MM-DD HH24:MI:SS') AS at, alert_type, coalesce(scope, '') AS scope,
                   coalesce(user_id, '') AS user_id, coalesce(call_id, '') AS call_id, message
            FROM cost_alerts ORDER BY id DESC LIMIT $1
            """, [limit])
    }

    /// The users who cost most in the month starting at `month`.
    public func topUsers(month: Timestamp, limit: Int) throws -> ReportRows {
        try report("""
            SELECT user_id, total_cost AS api_cost, event_count AS events, unpriced_event_count AS unpriced_events
            FROM period_rollups WHERE summary_type = 'user_month' AND period_start = $1
            ORDER BY total_cost DESC, user_id LIMIT $2
            """, [month, limit])
    }

    private func report(_ sql: String, _ parameters: [any PostgresEncodable]) throws -> ReportRows {
        let result = try connection.query(sql, parameters)
        return ReportRows(columns: result.columns, rows: try result.map { row in try result.columns.map { try row.text($0) } })
    }
}
