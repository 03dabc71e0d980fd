import PostgresClient
import VoiceMeterDomain
import VoiceMeterStore

/// Checks a run against what PostgreSQL holds: every summary the server sent equals the sum of
/// the call's stored events (in total and per service), the call's rollup row and its cost in
/// `call_margins`; every frame sent is stored exactly once; no acknowledged frame is missing;
/// and the rollups (each call's row, each user's months) equal the events.
public struct Verification: Sendable {
    /// Calls compared with the database.
    public var callsChecked: Int
    /// One line per disagreement; empty when everything reconciles.
    public var mismatches: [String]
    /// Distinct frames (call, seq) the database holds for the run's calls.
    public var framesStored: Int
    /// Frames covered by an ack that the database holds neither as an event nor as a rejected
    /// frame: must be 0.
    public var acknowledgedButLost: Int
    /// Frames stored more than once, or beyond the frames a call sent: must be 0.
    public var duplicates: Int
    /// Whether each call's `cost_summaries` row and each user's month rollups equal the events.
    public var rollupsEqualEvents: Bool

    public init(result: SimulationResult, database: PostgresConnection) throws {
        let callIDs = result.calls.map(\.callID)
        let rows = try database.query("""
            SELECT call_id, service, count(DISTINCT seq) AS frames, count(*) AS copies, sum(total_cost) AS cost
            FROM api_call_events WHERE call_id = ANY($1::text[]) GROUP BY call_id, service
            """, [PostgresTextArray(callIDs)])
        var stored: [String: (frames: Int, byService: [String: ExactDecimal])] = [:]
        var extraCopies = 0
        for row in rows {
            let callID = try row.decode("call_id", as: String.self)
            let frames = try row.decode("frames", as: Int.self)
            extraCopies += try row.decode("copies", as: Int.self) - frames
            stored[callID, default: (0, [:])].frames += frames
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
        framesStored = stored.values.reduce(0) { $0 + $1.frames }
        duplicates = extraCopies + result.calls.reduce(0) { $0 + max(0, (stored[$1.callID]?.frames ?? 0) - $1.framesSent) }
        acknowledgedButLost = try database.query("""
            SELECT count(*) AS lost
            FROM unnest($1::text[], $2::text[]::bigint[]) AS acked(call_id, through_seq)
            CROSS JOIN LATERAL generate_series(1, acked.through_seq) AS s(seq)
            WHERE NOT EXISTS (SELECT 1 FROM api_call_events e WHERE e.call_id = acked.call_id AND e.seq = s.seq)
              AND NOT EXISTS (SELECT 1 FROM rejected_frames r WHERE r.call_id = acked.call_id AND r.seq = s.seq)
            """, [PostgresTextArray(callIDs), PostgresTextArray(result.calls.map { String($0.acknowledgedThroughSeq) })]).single().decode("lost")
        let unequalRollups = try database.query("""
            WITH events AS (
                SELECT call_id, user_id, count(*) AS n, sum(total_cost) AS cost FROM api_call_events
                WHERE call_id = ANY($1::text[]) GROUP BY call_id, user_id
            ), users AS (
                SELECT user_id, sum(n) AS n, sum(cost) AS cost FROM events GROUP BY user_id
            )
            SELECT (SELECT count(*) FROM events e
                    LEFT JOIN cost_summaries s ON s.summary_type = 'call' AND s.call_id = e.call_id
                    WHERE s.total_cost IS DISTINCT FROM e.cost OR s.event_count IS DISTINCT FROM e.n)
                 + (SELECT count(*) FROM users u
                    LEFT JOIN (SELECT user_id, sum(total_cost) AS cost, sum(event_count) AS n FROM period_rollups
                               WHERE summary_type = 'user_month' GROUP BY user_id) r ON r.user_id = u.user_id
                    WHERE r.cost IS DISTINCT FROM u.cost OR r.n IS DISTINCT FROM u.n) AS unequal
            """, [PostgresTextArray(callIDs)]).single().decode("unequal", as: Int.self)
        rollupsEqualEvents = unequalRollups == 0
        if acknowledgedButLost > 0 { self.mismatches.append("\(acknowledgedButLost) acknowledged frames are not in the database") }
        if duplicates > 0 { self.mismatches.append("\(duplicates) frames stored twice or beyond what was sent") }
        if !rollupsEqualEvents { self.mismatches.append("\(unequalRollups) call or user rollups differ from their events") }
    }
}
