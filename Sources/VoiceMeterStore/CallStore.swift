import PostgresClient
import VoiceMeterDomain

/// A call as the database knows it when a `call.start` arrives.
public struct RegisteredCall: Sendable {
    public var userID: String
    /// Whether this `call.start` created the call (`false`: a resumed call, admitted before).
    public var isNew: Bool
    /// The start fixed at first registration (it is part of every event's key).
    public var startedAt: Timestamp
    /// Events already committed for the call (a resumed call), oldest `seq` first.
    public var committedEvents: [CommittedEvent]
}

/// A committed event, enough to rebuild a call's billing state and recognise resends.
public struct CommittedEvent: Sendable {
    public var stored: StoredUsageEvent
    public var totalCost: ExactDecimal?
    public var payloadHash: PayloadHash
}

public enum CallRegistration: Sendable {
    case registered(RegisteredCall)
    /// The call id already belongs to another user.
    case belongsToAnotherUser
    /// The call has ended (completed, cut off and ended, or abandoned): it is never reopened.
    case ended
}

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
            let inserted = try connection.query("""
                INSERT INTO calls (user_id, call_id, persona_id, started_at, revenue, currency, payment_method)
                VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, call_id) DO NOTHING
                """, [start.userID, start.callID, start.personaID, startedAt, start.revenue, start.currency, start.paymentMethod])
            // A call refused at admission was never admitted: its next call.start is checked again.
            let retried = try connection.query("""
                UPDATE calls SET status = 'active', updated_at = now() WHERE user_id = $1 AND call_id = $2 AND status = 'rejected'
                """, [start.userID, start.callID])
            let owners = try connection.query("""
                SELECT user_id, started_at, ended_at IS NOT NULL AS ended FROM calls WHERE call_id = $1 ORDER BY created_at
                """, [start.callID])
            guard let first = owners.first, try first.decode("user_id", as: String.self) == start.userID else {
                return .belongsToAnotherUser
            }
            guard try !first.decode("ended", as: Bool.self) else { return .ended }
            let events = try connection.query("""
                SELECT seq, service, operation, model, usage_amount, usage_unit, occurred_at, price_id, total_cost, payload_hash
                FROM api_call_events WHERE user_id = $1 AND call_id = $2 ORDER BY seq
                """, [start.userID, start.callID])
            return .registered(RegisteredCall(
                userID: start.userID,
                isNew: inserted.affectedRows == 1 || retried.affectedRows == 1,
                startedAt: try first.decode("started_at"),
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
                }
            ))
        }
    }

    /// Marks a call ended (once: a node's stale copy of a call that ended elsewhere cannot
    /// overwrite it) and writes its `cost_summaries` row from its events, inside the writer's
    /// transaction after the call's last events.
    public static func end(userID: String, callID: String, endedAt: Timestamp, status: String, on connection: PostgresConnection) throws {
        // Repricing locks the same row first: the call's figures below are read after it commits.
        try connection.query("SELECT 1 FROM calls WHERE user_id = $1 AND call_id = $2 FOR UPDATE", [userID, callID])
        try connection.query("""
            UPDATE calls SET ended_at = GREATEST($3::timestamptz, started_at), status = $4, updated_at = now()
            WHERE user_id = $1 AND call_id = $2 AND ended_at IS NULL
            """, [userID, callID, endedAt, status])
        try connection.query(Rollups.summarizeCallScript, [userID, callID])
    }
}
