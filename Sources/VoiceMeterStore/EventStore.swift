import PostgresClient
import VoiceMeterDomain

/// What a committed batch did with each of its events.
public struct EventCommitResult: Sendable, Equatable {
    /// New rows, counted in the rollups.
    public var inserted: Set<EventKey> = []
    /// Already stored with the same payload: a harmless resend, acknowledged again, counted once.
    public var duplicates: Set<EventKey> = []
    /// Already stored with a different payload: refused with `seq_conflict`.
    public var conflicts: Set<EventKey> = []
}

/// Writes priced events to `api_call_events` and their rollups in one transaction, exactly once.
///
/// The path (the fastest safe one measured on this machine): COPY into a session temp table,
/// then `INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING` into the ledger, whose returned rows —
/// only the ones actually inserted — feed `Rollups` (period deltas journaled for folding). A
/// replayed batch inserts and counts nothing.
public struct EventStore {
    private let connection: PostgresConnection

    public init(connection: PostgresConnection) {
        self.connection = connection
    }

    private static let stagingColumns = """
        call_id, seq, user_id, call_started_at, persona_id, occurred_at, service, operation, model,
        usage_amount, usage_unit, billed_amount, price_id, unit_cost, total_cost, estimated, metadata, external_id, payload_hash
        """

    /// Commits `events` (any mix of new, resent and conflicting) and says which was which;
    /// `alsoInTransaction` runs in the same transaction after the events are stored (the writer
    /// closes ended calls there, writing their rows), and the period deltas are journaled last.
    public func commit(_ events: [UsageEvent], alsoInTransaction: (PostgresConnection) throws -> Void = { _ in }) throws -> EventCommitResult {
        return try connection.transaction { connection in
            guard !events.isEmpty else {
                try alsoInTransaction(connection)
                return EventCommitResult()
            }
            let result = try store(events, on: connection)
            try alsoInTransaction(connection)
            try connection.runScript(Rollups.journalScript)
            return result
        }
    }

    /// Inserts the events and fills `rollup_delta` with the new ones.
    private func store(_ events: [UsageEvent], on connection: PostgresConnection) throws -> EventCommitResult {
        try connection.runScript("""
            CREATE TEMP TABLE IF NOT EXISTS event_staging
                (LIKE api_call_events INCLUDING DEFAULTS EXCLUDING CONSTRAINTS) ON COMMIT DELETE ROWS;
            \(Rollups.prepareScript);
            """)
        // A key sent twice in one batch is staged once; its other copies are classified below.
        var staged = Set<EventKey>()
        try connection.copyIn("COPY event_staging (\(Self.stagingColumns)) FROM STDIN") { writer in
            for event in events where staged.insert(event.key).inserted { try Self.writeRow(event, to: &writer) }
        }
        // Only a count comes back: in the usual batch every staged event is new (the staged keys
        // are the inserted ones), and decoding and hashing each returned key showed in profiles.
        let summary = try connection.query("""
            WITH inserted AS (
                INSERT INTO api_call_events (\(Self.stagingColumns))
                SELECT \(Self.stagingColumns) FROM event_staging ORDER BY call_id, seq
                ON CONFLICT DO NOTHING
                RETURNING call_id, seq, user_id, call_started_at, occurred_at, service, operation, usage_unit,
                          usage_amount, total_cost
            ), counted AS (
                INSERT INTO rollup_delta
                SELECT user_id, call_id, call_started_at, occurred_at, service, operation, usage_unit, usage_amount,
                       coalesce(total_cost, 0), 1, CASE WHEN total_cost IS NULL THEN 1 ELSE 0 END
                FROM inserted
            )
            SELECT count(*) AS inserted, coalesce(bool_or(total_cost IS NULL), false) AS unpriced FROM inserted
            """).single()
        if try summary.decode("unpriced", as: Bool.self) { try connection.runScript(Self.alertUnpricedScript) }
        var result = EventCommitResult()
        if try summary.decode("inserted", as: Int.self) == events.count {
            result.inserted = staged
        } else {
            try classify(events, into: &result, on: connection)
        }
        return result
    }

    /// One `unpriced_usage` alert per call and price key that had usage with no price in force.
    private static let alertUnpricedScript = """
        INSERT INTO cost_alerts (alert_type, user_id, call_id, service, message, data)
        SELECT DISTINCT 'unpriced_usage', s.user_id, s.call_id, s.service,
               'no price in force for ' || s.service || '/' || s.operation || coalesce('/' || s.model, '') || ' per '
                   || s.usage_unit || '; the usage is stored unpriced: add the price, then run voicemeter reprice',
               jsonb_build_object('operation', s.operation, 'model', s.model, 'unit', s.usage_unit)
        FROM event_staging s
        WHERE s.price_id IS NULL AND NOT EXISTS (
            SELECT 1 FROM cost_alerts a
            WHERE a.alert_type = 'unpriced_usage' AND a.user_id = s.user_id AND a.call_id = s.call_id AND a.service = s.service
              AND a.data = jsonb_build_object('operation', s.operation, 'model', s.model, 'unit', s.usage_unit))
        """

    /// Sorts the events of a batch that did not all go in: inserted by this transaction (a key's
    /// first copy only), resent with the same payload hash, or conflicting with what is stored.
    ///
    /// A row is this transaction's when its `xmin` is this transaction's id and its `created_at`
    /// (the default `now()`, the transaction's start) is this transaction's start: `xmin` alone
    /// is 32 bits and a frozen row keeps it, so after 2³² transactions an old row could match.
    /// This holds while `commit` runs in one transaction without savepoints (a subtransaction
    /// would stamp its own id).
    private func classify(_ events: [UsageEvent], into result: inout EventCommitResult, on connection: PostgresConnection) throws {
        let stored = try connection.query("""
            SELECT e.call_id, e.seq, e.payload_hash,
                   e.xmin = pg_current_xact_id()::xid AND e.created_at = now() AS inserted_now
            FROM api_call_events e
            JOIN (SELECT DISTINCT call_id, seq FROM event_staging) s USING (call_id, seq)
            """)
        var storedHashes: [EventKey: PayloadHash] = [:]
        for row in stored {
            let key = EventKey(callID: try row.decode("call_id"), seq: try row.decode("seq"))
            if try row.decode("inserted_now", as: Bool.self) { result.inserted.insert(key) }
            storedHashes[key] = try row.decode("payload_hash", as: PayloadHash.self)
        }
        var seen = Set<EventKey>()
        for event in events {
            let isFirstCopy = seen.insert(event.key).inserted
            if isFirstCopy && result.inserted.contains(event.key) { continue }
            if storedHashes[event.key] == event.payloadHash {
                result.duplicates.insert(event.key)
            } else {
                result.conflicts.insert(event.key)
            }
        }
    }

    /// Writes `event` as one row of `stagingColumns`, field by field (no array of strings per event;
    /// timestamps and the payload hash as bytes).
    static func writeRow(_ event: UsageEvent, to writer: inout PostgresCopyWriter) throws(PostgresError) {
        let priced: PricedUsage? = if case .priced(let priced) = event.pricing { priced } else { nil }
        try writer.field(event.key.callID)
        writer.field { $0.appendDecimal(Int(event.key.seq)) }
        try writer.field(event.userID)
        writer.field { event.callStartedAt.appendRFC3339(to: &$0) }
        try writer.field(event.personaID)
        writer.field { event.usage.occurredAt.appendRFC3339(to: &$0) }
        try writer.field(event.usage.service)
        try writer.field(event.usage.operation)
        try writer.field(event.usage.model)
        writer.field { event.usage.amount.appendDescription(to: &$0) }
        try writer.field(event.usage.unit.rawValue)
        if let priced {
            writer.field { priced.billedAmount.appendDescription(to: &$0) }
            writer.field { $0.appendDecimal(Int(priced.priceID)) }
            writer.field { priced.unitCost.appendDescription(to: &$0) }
            writer.field { priced.totalCost.appendDescription(to: &$0) }
        } else {
            for _ in 0..<4 { try writer.field(nil) }
        }
        try writer.field(event.estimated ? "t" : "f")
        try writer.field(event.metadataJSON)
        try writer.field(event.externalID)
        event.payloadHash.withUnsafeBytes { writer.field(bytea: $0) }
        try writer.endRow()
    }
}
