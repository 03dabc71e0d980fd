import PostgresClient
import VoiceMeterDomain
import VoiceMeterStore

/// Checks a run against what PostgreSQL holds: every summary the server sent equals the sum of
/// the call's stored events (in total and per service), the call's rollup row and its cost in
/// `call_margins`; and every frame sent is stored exactly once.
public struct Verification: Sendable {
    /// Calls compared with the database.
    public var callsChecked: Int
    /// One line per disagreement; empty when everything reconciles.
    public var mismatches: [String]

    public init(result: SimulationResult, database: PostgresConnection) throws {
        let callIDs = result.calls.map(\.callID)
        let rows = try database.query("""
            SELECT call_id, service, count(DISTINCT seq) AS frames, sum(total_cost) AS cost
            FROM api_call_events WHERE call_id = ANY($1::text[]) GROUP BY call_id, service
            """, [PostgresTextArray(callIDs)])
        var stored: [String: (frames: Int, byService: [String: ExactDecimal])] = [:]
        for row in rows {
            let callID = try row.decode("call_id", as: String.self)
            stored[callID, default: (0, [:])].frames += try row.decode("frames", as: Int.self)
            if let cost = try row.decodeIfPresent("cost", as: ExactDecimal.self) {
                stored[callID, default: (0, [:])].byService[try row.decode("service", as: String.self)] = cost
            }
        }
        var rolledUp: [String: ExactDecimal] = [:]
        for row in try database.query("SELECT call_id, total_cost FROM cost_summaries WHERE summary_type = 'call' AND call_id = ANY($1::text[])",
                                      [PostgresTextArray(callIDs)]) {
            rolledUp[try row.decode("call_id", as: String.self)] = try row.decode("total_cost", as: ExactDecimal.self)
        }
        var margins: [String: ExactDecimal] = [:]
        for row in try database.query("SELECT call_id, api_cost FROM call_margins WHERE call_id = ANY($1::text[])", [PostgresTextArray(callIDs)]) {
            margins[try row.decode("call_id", as: String.self)] = try row.decode("api_cost", as: ExactDecimal.self)
        }
        var mismatches: [String] = []
        for call in result.calls {
            let held = stored[call.callID] ?? (0, [:])
            if held.frames != call.framesSent {
                mismatches.append("\(call.callID): sent \(call.framesSent) distinct frames, the database holds \(held.frames)")
            }
            guard let summary = call.summary else { continue }
            let total = held.byService.values.reduce(ExactDecimal.zero) { (try? $0.adding($1)) ?? $0 }
            if summary.cost != total {
                mismatches.append("\(call.callID): call.summary cost \(summary.cost), the database sums to \(total)")
            }
            if rolledUp[call.callID] != summary.cost {
                mismatches.append("\(call.callID): call.summary cost \(summary.cost), its cost_summaries row \(rolledUp[call.callID].map(\.description) ?? "missing")")
            }
            if margins[call.callID] != summary.cost {
                mismatches.append("\(call.callID): call.summary cost \(summary.cost), call_margins api_cost \(margins[call.callID].map(\.description) ?? "missing")")
            }
            let summaryServices = summary.byService.filter { !$0.value.isZero }
            let storedServices = held.byService.filter { !$0.value.isZero }
            if summaryServices != storedServices {
                mismatches.append("\(call.callID): call.summary by service \(summaryServices.sorted { $0.key < $1.key }), the database \(storedServices.sorted { $0.key < $1.key })")
            }
        }
        callsChecked = result.calls.count
        self.mismatches = mismatches
    }
}
