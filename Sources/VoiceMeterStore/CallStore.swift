import PostgresClient
import VoiceMeterDomain

/// The `calls` table: registration at `call.start` (idempotent: a resumed call keeps its start)
/// and the end of a call.
public struct CallStore {
    private let connection: PostgresConnection

    public init(connection: PostgresConnection) {
        self.connection = connection
    }

    /// Registers the call (or finds it) and returns what is already committed for it.
    public func register(_ start: CallStart, startedAt: Timestamp) throws -> CallRegistration {
        try connection.transaction { connection in
            // The id is claimed first: a start for another user's id writes nothing at all.
            try connection.query("INSERT INTO call_owners (call_id, user_id) VALUES ($1, $2) ON CONFLICT (call_id) DO NOTHING",
                                 [start.callID, start.userID])
            let owner = try connection.query("SELECT user_id FROM call_owners WHERE call_id = $1", [start.callID])
            guard try owner.single().decode("user_id", as: String.self) == start.userID else { return .belongsToAnotherUser }
            let inserted = try connection.query("""
                INSERT INTO calls (user_id, call_id, persona_id, started_at, revenue, currency, payment_method)
                VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, call_id) DO NOTHING
                """, [start.userID, start.callID, start.personaID, startedAt, start.revenue, start.currency, start.paymentMethod])
            // A call refused at admission was never admitted: its next call.start is checked again
            // (with the start it now gives: it has no events).
            let retried = try connection.query("""
                UPDATE calls SET status = 'active', started_at = $3, updated_at = now()
                WHERE user_id = $1 AND call_id = $2 AND status = 'rejected'
                """, [start.userID, start.callID, startedAt])
            let call = try connection.query("""
                SELECT started_at, ended_at IS NOT NULL AS ended FROM calls WHERE user_id = $1 AND call_id = $2
                """, [start.userID, start.callID]).single()
            guard try !call.decode("ended", as: Bool.self) else { return .ended }
            // Every registration after the first is a resume: it supersedes the copies before it.
            let generation = try connection.query("""
                UPDATE calls SET registrations = registrations + $3 WHERE user_id = $1 AND call_id = $2 RETURNING registrations
                """, [start.userID, start.callID, inserted.affectedRows == 1 ? Int64(0) : Int64(1)])
            let refused = try connection.query("""
                SELECT DISTINCT ON (seq) seq, reason FROM rejected_frames
                WHERE call_id = $1 AND seq IS NOT NULL AND reason <> 'unknown_call' ORDER BY seq, id
                """, [start.callID])
            let events = try connection.query("""
                SELECT seq, service, operation, model, usage_amount, usage_unit, occurred_at, price_id, total_cost, payload_hash
                FROM api_call_events WHERE user_id = $1 AND call_id = $2 ORDER BY seq
                """, [start.userID, start.callID])
            return .registered(RegisteredCall(
                userID: start.userID,
                isNew: inserted.affectedRows == 1 || retried.affectedRows == 1,
                startedAt: try call.decode("started_at"),
                committedEvents: try events.map { row in
                    let unitName: String = try row.decode("usage_unit")
                    guard let unit = UsageUnit(rawValue: unitName) else {
                        throw PostgresError(kind: .unexpectedResult, message: "api_call_events has unknown unit '\(unitName)'")
                    }
                    let usage = MeteredUsage(service: try row.decode("service"), operation: try row.decode("operation"),
                                             model: try row.decodeIfPresent("model"), unit: unit,
                                             amount: try row.decode("usage_amount"), occurredAt: try row.decode("occurred_at"))
                    return CommittedEvent(
                        stored: StoredUsageEvent(seq: try row.decode("seq"), usage: usage, priceID: try row.decodeIfPresent("price_id")),
                        totalCost: try row.decodeIfPresent("total_cost"),
                        payloadHash: try row.decode("payload_hash", as: PayloadHash.self)
                    )
                },
                refusedFrames: Dictionary(try refused.map { (try $0.decode("seq", as: Int64.self), try $0.decode("reason", as: String.self)) },
                                          uniquingKeysWith: { first, _ in first }),
                generation: try generation.first?.decode("registrations") ?? 1
            ))
        }
    }

    /// Ends a call and writes its `cost_summaries` row from its events, inside the writer's
    /// transaction after the call's last events, and returns the call's stored cost per service.
    ///
    /// An ending applies once: a call that ended stays ended, except that the sender's own end
    /// corrects an `abandoned` mark. A conditional ending (`onlyIfGeneration`, from a copy that
    /// lost its connection) applies only if no later registration resumed the call.
    public static func end(_ ending: CallEnding, on connection: PostgresConnection) throws -> EndedCall {
        // Repricing locks the same row first: the call's figures below are read after it commits.
        try connection.query("SELECT 1 FROM calls WHERE user_id = $1 AND call_id = $2 FOR UPDATE", [ending.userID, ending.callID])
        let updated = try connection.query("""
            UPDATE calls SET ended_at = GREATEST($3::timestamptz, started_at), status = $4, updated_at = now()
            WHERE user_id = $1 AND call_id = $2
              AND (ended_at IS NULL OR (status = 'abandoned' AND $4 <> 'abandoned' AND $5::bigint IS NULL))
              AND ($5::bigint IS NULL OR registrations = $5)
            """, [ending.userID, ending.callID, ending.endedAt, ending.status, ending.onlyIfGeneration])
        let applied = updated.affectedRows == 1
        guard applied || ending.onlyIfGeneration == nil else { return EndedCall(ending: ending, applied: false, costByService: []) }
        try connection.query(Rollups.summarizeCallScript, [ending.userID, ending.callID])
        let costs = try connection.query("""
            SELECT service, sum(total_cost) AS cost FROM api_call_events
            WHERE user_id = $1 AND call_id = $2 AND total_cost IS NOT NULL GROUP BY service ORDER BY service
            """, [ending.userID, ending.callID])
        return EndedCall(ending: ending, applied: applied,
                         costByService: try costs.map { ServiceCost(service: try $0.decode("service"), cost: try $0.decode("cost")) })
    }
}
