import PostgresClient
import VoiceMeterDomain

/// What a repricing run did.
public struct RepriceSummary: Sendable, Equatable {
    /// Calls that had unpriced events.
    public var callsExamined = 0
    /// Events priced now.
    public var eventsPriced = 0
    /// Events that still have no price in force.
    public var eventsStillUnpriced = 0

    public init(callsExamined: Int = 0, eventsPriced: Int = 0, eventsStillUnpriced: Int = 0) {
        self.callsExamined = callsExamined
        self.eventsPriced = eventsPriced
        self.eventsStillUnpriced = eventsStillUnpriced
    }
}

/// Prices stored events that were unpriced, once prices exist, and updates the rollups exactly.
///
/// Each call is repriced in its own transaction with its events locked, continuing the call's
/// billing state (`Repricing`). Only rows still unpriced are updated, and only those are added to
/// the rollups, so running it twice, or alongside the writer, never counts anything twice.
public struct Repricer {
    private let connection: PostgresConnection

    public init(connection: PostgresConnection) {
        self.connection = connection
    }

    public func run(book: PriceBook) throws -> RepriceSummary {
        var summary = RepriceSummary()
        let calls = try connection.query("""
            SELECT user_id, call_id, count(*) AS unpriced FROM api_call_events WHERE price_id IS NULL
            GROUP BY user_id, call_id ORDER BY user_id, call_id
            """)
        for call in calls {
            let userID: String = try call.decode("user_id")
            let callID: String = try call.decode("call_id")
            summary.callsExamined += 1
            let priced = try repriceCall(userID: userID, callID: callID, book: book)
            summary.eventsPriced += priced
            summary.eventsStillUnpriced += try call.decode("unpriced", as: Int.self) - priced
        }
        return summary
    }

    private func repriceCall(userID: String, callID: String, book: PriceBook) throws -> Int {
        try connection.transaction { connection in
            // The call first, then its events, then rollups: the order the ledger writer ends a call
            // in, so an ending call's figures are computed after this repricing, never before it.
            try connection.query("SELECT 1 FROM calls WHERE user_id = $1 AND call_id = $2 FOR UPDATE", [userID, callID])
            let rows = try connection.query("""
                SELECT seq, service, operation, model, usage_amount, usage_unit, occurred_at, price_id
                FROM api_call_events WHERE user_id = $1 AND call_id = $2 ORDER BY seq FOR UPDATE
                """, [userID, callID])
            let events = try rows.map { row in
                let unitName: String = try row.decode("usage_unit")
                guard let unit = UsageUnit(rawValue: unitName) else {
                    throw PostgresError(kind: .unexpectedResult, message: "api_call_events has unknown unit '\(unitName)'")
                }
                return StoredUsageEvent(
                    seq: try row.decode("seq"),
                    usage: MeteredUsage(
                        service: try row.decode("service"), operation: try row.decode("operation"), model: try row.decodeIfPresent("model"),
                        unit: unit, amount: try row.decode("usage_amount"), occurredAt: try row.decode("occurred_at")
                    ),
                    priceID: try row.decodeIfPresent("price_id")
                )
            }
            let repriced = Repricing.reprice(callEvents: events, book: book).sorted { $0.key < $1.key }
            guard !repriced.isEmpty else { return 0 }
            try connection.runScript(Rollups.prepareScript)
            let updated = try connection.query("""
                WITH priced AS (
                    UPDATE api_call_events e
                    SET price_id = v.price_id, unit_cost = v.unit_cost, total_cost = v.total_cost, billed_amount = v.billed_amount
                    FROM unnest($3::bigint[], $4::bigint[], $5::numeric[], $6::numeric[], $7::numeric[])
                         AS v(seq, price_id, unit_cost, total_cost, billed_amount)
                    WHERE e.user_id = $1 AND e.call_id = $2 AND e.seq = v.seq AND e.price_id IS NULL
                    RETURNING e.user_id, e.call_id, e.call_started_at, e.occurred_at, e.service, e.operation, e.usage_unit, e.total_cost
                )
                INSERT INTO rollup_delta
                SELECT user_id, call_id, call_started_at, occurred_at, service, operation, usage_unit, 0, total_cost, 0, -1
                FROM priced
                """, [
                    userID, callID,
                    PostgresTextArray(repriced.map(\.key)),
                    PostgresTextArray(repriced.map(\.value.priceID)),
                    PostgresTextArray(repriced.map(\.value.unitCost)),
                    PostgresTextArray(repriced.map(\.value.totalCost)),
                    PostgresTextArray(repriced.map(\.value.billedAmount)),
                ])
            // A call's row, written when it ended, is rewritten from its events the same way; a live
            // call has none yet (it gets one when it ends). Then the period deltas, journaled.
            let hasCallRow = try !connection.query(
                "SELECT 1 FROM cost_summaries WHERE summary_type = 'call' AND user_id = $1 AND call_id = $2", [userID, callID]).isEmpty
            if hasCallRow { try connection.query(Rollups.summarizeCallScript, [userID, callID]) }
            try connection.runScript(Rollups.journalScript)
            return updated.affectedRows
        }
    }
}
