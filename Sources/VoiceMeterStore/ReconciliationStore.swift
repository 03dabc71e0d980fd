import PostgresClient
import VoiceMeterDomain

/// One reported cost after comparison with the ledger.
public struct ReconciliationLine: Sendable, Hashable {
    public var reported: ReportedCost
    /// The ledger's cost for the call and service; `nil` when it has none (unmatched).
    public var estimated: ExactDecimal?
    public var difference: ExactDecimal? { estimated.flatMap { try? reported.actualCost.subtracting($0) } }
}

/// Compares provider-reported costs with the ledger in one transaction: matching events are marked
/// verified (`estimated = false`), and every report, matched or not, is recorded in
/// `cost_reconciliations` with its difference. Runs as the owner role (it updates events).
public struct ReconciliationStore {
    private let connection: PostgresConnection

    public init(connection: PostgresConnection) {
        self.connection = connection
    }

    public func reconcile(_ costs: [ReportedCost], source: String) throws -> [ReconciliationLine] {
        try connection.transaction { connection in
            try costs.map { reported in
                let ledger = try connection.query("""
                    SELECT min(user_id) AS user_id, sum(total_cost) AS estimated, count(*) AS events
                    FROM api_call_events WHERE call_id = $1 AND service = $2
                    """, [reported.callID, reported.service]).single()
                let matched = try ledger.decode("events", as: Int.self) > 0
                let estimated: ExactDecimal? = matched ? (try ledger.decodeIfPresent("estimated") ?? .zero) : nil
                let line = ReconciliationLine(reported: reported, estimated: estimated)
                if matched {
                    try connection.query("UPDATE api_call_events SET estimated = false WHERE call_id = $1 AND service = $2",
                                         [reported.callID, reported.service])
                }
                try connection.query("""
                    INSERT INTO cost_reconciliations (source, call_id, user_id, service, estimated_cost, actual_cost, difference, matched)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                    """, [source, reported.callID, try ledger.decodeIfPresent("user_id", as: String.self), reported.service,
                          estimated, reported.actualCost, line.difference, matched])
                return line
            }
        }
    }
}
