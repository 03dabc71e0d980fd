import PostgresClient

/// Keeps `cost_summaries` from the changes of each transaction: journaled by the transaction,
/// folded later.
///
/// Whoever changes events (the ledger writer inserting them, repricing pricing them) first writes
/// one row per changed event into the temporary table `rollup_delta`, in the same transaction,
/// then runs `journalScript`, which appends the deltas, one row per user and UTC day, to
/// `rollup_journal`. Only changed rows are counted, so a replayed batch adds nothing.
///
/// The period levels (user_day, user_month, platform_day) are folded from the journal by
/// `fold(on:step:)`, each user every few seconds, one folder at a time: with live calls each
/// commit holds a frame or two per user, and upserting two rows per user on every commit was half
/// of the database's time. Exact readers use the `period_rollups` view (folded rows plus the
/// journal).
///
/// A call's own row is written from its stored events (`summarizeCallScript`) when it ends, and
/// again when repricing changes an ended call: upserting live calls' rows on every commit was a
/// quarter of the ledger's database work (finance views read live calls from their events).
public enum Rollups {
    /// Creates the session's `rollup_delta` table if it does not exist (rows vanish at commit).
    public static let prepareScript = """
        CREATE TEMP TABLE IF NOT EXISTS rollup_delta (
            user_id         text NOT NULL,
            call_id         text NOT NULL,
            call_started_at timestamptz NOT NULL,
            occurred_at     timestamptz NOT NULL,
            service         text NOT NULL,
            operation       text NOT NULL,
            usage_unit      text NOT NULL,
            usage_amount    numeric NOT NULL,  -- usage to add to the usage metrics (0 when repricing)
            cost            numeric NOT NULL,  -- money to add
            event_delta     integer NOT NULL,  -- +1 for a new event
            unpriced_delta  integer NOT NULL   -- +1 new unpriced event, -1 event priced later
        ) ON COMMIT DELETE ROWS
        """

    /// The measures of a set of `rollup_delta` rows: the per-service costs, usage metrics and
    /// counts (a FILTER that matches no row adds zero).
    private static let eventMeasures = [
        "sum(cost) FILTER (WHERE service = 'twilio')",
        "sum(cost) FILTER (WHERE service = 'deepgram')",
        "sum(cost) FILTER (WHERE service = 'cerebras')",
        "sum(cost) FILTER (WHERE service = 'openai')",
        "sum(cost) FILTER (WHERE service = 'elevenlabs')",
        "sum(cost) FILTER (WHERE service NOT IN ('twilio', 'deepgram', 'cerebras', 'openai', 'elevenlabs'))",
        "sum(cost)",
        "sum(usage_amount * CASE usage_unit WHEN 'minutes' THEN 60 ELSE 1 END) FILTER (WHERE operation LIKE 'voice\\_%' AND usage_unit IN ('seconds', 'minutes'))",
        "sum(usage_amount * CASE usage_unit WHEN 'minutes' THEN 60 ELSE 1 END) FILTER (WHERE operation LIKE 'stt\\_%' AND usage_unit IN ('seconds', 'minutes'))",
        "sum(usage_amount) FILTER (WHERE usage_unit LIKE '%tokens')",
        "sum(usage_amount) FILTER (WHERE usage_unit = 'characters')",
        "sum(event_delta)",
        "sum(unpriced_delta)",
    ].map { "coalesce(\($0), 0)" }.joined(separator: ",\n    ")

    /// The measure columns, in the order of `eventMeasures`, in `cost_summaries` and `rollup_journal`.
    private static let measureColumns = [
        "twilio_cost", "deepgram_cost", "cerebras_cost", "openai_cost", "elevenlabs_cost", "other_cost", "total_cost",
        "total_duration_seconds", "total_stt_seconds", "total_ai_tokens", "total_tts_characters", "event_count", "unpriced_event_count",
    ]

    private static let columns = measureColumns.joined(separator: ", ")

    /// The measures of a set of journal rows: their sums.
    private static let summedMeasures = measureColumns.map { "sum(\($0))" }.joined(separator: ", ")

    /// Adds the new figures to an existing row.
    private static let accumulate = measureColumns.map { "\($0) = cost_summaries.\($0) + EXCLUDED.\($0)" }
        .joined(separator: ",\n    ") + ",\n    updated_at = now()"

    /// Replaces an existing row's figures.
    private static let replace = measureColumns.map { "\($0) = EXCLUDED.\($0)" }.joined(separator: ",\n    ") + ",\n    updated_at = now()"

    /// One level's upsert from the rows of `source`, whose `measures` it sums; `replacing`
    /// overwrites an existing row's figures instead of adding to them.
    private static func level(type: String, user: String, call: String, start: String, end: String,
                              source: String, measures: String, replacing: Bool = false) -> String {
        """
        INSERT INTO cost_summaries (summary_type, user_id, call_id, period_start, period_end, \(columns))
        SELECT '\(type)', \(user), \(call), \(start), \(end), \(measures)
        FROM \(source) GROUP BY 2, 3, 4 ORDER BY 2, 3, 4
        ON CONFLICT (summary_type, user_id, call_id, period_start) DO UPDATE SET
            period_end = GREATEST(cost_summaries.period_end, EXCLUDED.period_end),
        \(replacing ? replace : accumulate)
        """
    }

    /// Moves the deltas in `rollup_delta` to `rollup_journal`, one row per user and UTC day; run
    /// inside the transaction that filled it. The deltas are consumed (a second run adds
    /// nothing), without a TRUNCATE's new file on every commit.
    public static let journalScript = """
        WITH deltas AS (DELETE FROM rollup_delta RETURNING *)
        INSERT INTO rollup_journal (user_id, period_start, \(columns))
        SELECT user_id, date_trunc('day', occurred_at, 'UTC'), \(eventMeasures)
        FROM deltas GROUP BY 1, 2
        """

    /// Any number, the same in every process: the advisory lock that lets one fold run at a time.
    private static let foldLock = 7_201_011

    /// A step of a sweep: takes the committed journal rows of the users after $1 (in `user_id`
    /// order) up to the user of the $2-th such row, all of that user's rows included (through the
    /// journal's user index); answers the rows taken and the last user taken (NULL: none after $1).
    private static let foldStepStatement = foldStatement(
        bound: "SELECT max(user_id) AS last_user FROM (SELECT user_id FROM rollup_journal WHERE user_id > $1 ORDER BY user_id LIMIT $2) AS next_rows",
        taking: "DELETE FROM rollup_journal WHERE user_id > $1 AND user_id <= (SELECT last_user FROM bound) RETURNING *")

    /// Takes every committed journal row (one pass over the table).
    private static let foldAllStatement = foldStatement(
        bound: "SELECT NULL::text AS last_user", taking: "DELETE FROM rollup_journal RETURNING *")

    /// Takes journal rows (`taking`, a DELETE … RETURNING *) and upserts the three period levels
    /// from them, each level's rows in key order, in one statement; answers the rows taken and
    /// `bound`'s last user.
    private static func foldStatement(bound: String, taking: String) -> String {
        """
        WITH bound AS (\(bound)), taken AS (\(taking)), user_day AS (
        \(level(type: "user_day", user: "user_id", call: "''", start: "period_start", end: "period_start + interval '1 day'",
                source: "taken", measures: summedMeasures))
        ), user_month AS (
        \(level(type: "user_month", user: "user_id", call: "''", start: "date_trunc('month', period_start, 'UTC')",
                end: "date_trunc('month', period_start, 'UTC') + interval '1 month'", source: "taken", measures: summedMeasures))
        ), platform_day AS (
        \(level(type: "platform_day", user: "''", call: "''", start: "period_start", end: "period_start + interval '1 day'",
                source: "taken", measures: summedMeasures))
        )
        SELECT count(*) AS folded, (SELECT last_user FROM bound) AS last_user FROM taken
        """
    }

    /// What one fold moved.
    public struct Folded: Sendable, Equatable {
        /// Journal rows moved into `cost_summaries`.
        public var rows: Int
        /// The last user folded; `nil` when no user came after the one folding started after.
        public var lastUser: String?
    }

    /// Moves committed journal rows into the period levels of `cost_summaries`, in one
    /// transaction: with `step`, those of the users after `step.after` (in `user_id` order,
    /// through the journal's user index), about `step.rows` rows, each user's rows all at once
    /// (the server sweeps the users this way, a step a second, so the work comes as a steady
    /// trickle); without, every row. Folds take turns (an advisory lock), and the journal's rows
    /// are deleted in the transaction that adds them, so a row is counted once whichever process
    /// folds it, and one committed meanwhile waits for the next fold.
    @discardableResult
    public static func fold(on connection: PostgresConnection, step: (after: String, rows: Int)? = nil) throws -> Folded {
        precondition((step?.rows ?? 1) >= 1, "a step takes at least one row")
        return try connection.transaction { connection in
            try connection.query("SELECT pg_advisory_xact_lock(\(foldLock))")
            let result = if let step {
                try connection.query(foldStepStatement, [step.after, step.rows]).single()
            } else {
                try connection.query(foldAllStatement).single()
            }
            return Folded(rows: try result.decode("folded"), lastUser: try result.decodeIfPresent("last_user"))
        }
    }

    /// The planner's estimate of the journal's rows (maintained by autovacuum; 0 when unknown),
    /// for sizing a sweep's steps.
    public static func estimatedJournalRows(on connection: PostgresConnection) throws -> Int {
        try connection.query("SELECT greatest(reltuples, 0)::bigint AS rows FROM pg_class WHERE oid = 'rollup_journal'::regclass")
            .single().decode("rows")
    }

    /// Writes an ended call's row from all its stored events ($1 user id, $2 call id), replacing
    /// any earlier figures; run in the transaction that ends the call, after its last events.
    /// A call's period runs from its start to just after its latest event.
    public static let summarizeCallScript = level(
        type: "call", user: "user_id", call: "call_id", start: "call_started_at",
        end: "GREATEST(max(occurred_at), call_started_at) + interval '1 microsecond'",
        source: """
            (SELECT user_id, call_id, call_started_at, occurred_at, service, operation, usage_unit, usage_amount,
                    coalesce(total_cost, 0) AS cost, 1 AS event_delta, CASE WHEN total_cost IS NULL THEN 1 ELSE 0 END AS unpriced_delta
             FROM api_call_events WHERE user_id = $1 AND call_id = $2) AS call_events
            """,
        measures: eventMeasures, replacing: true)
}
