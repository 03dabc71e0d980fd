// VoiceMeterLedger: the writers that commit usage events and call endings to PostgreSQL in
// batches (an acknowledgement follows a commit, never precedes it) and the rollup folder that
// folds the journal into cost_summaries. It owns its database connections and queues; it knows
// nothing of WebSockets or of metering's decisions: commits and refusals are reported through the
// callbacks its owner gives it.

import Dispatch
import Logging
import PostgresClient
import VoiceMeterDomain

/// One or more ledger writers, each with its own thread and connection. A call always goes to the
/// same writer (a stable hash of its id), so its events commit — and are acknowledged — in order.
/// Writers share no rollup rows: each appends its period deltas to `rollup_journal`, and a call's
/// row is written only by the writer that owns the call.
public final class LedgerWriters: Sendable {
    public let writers: [LedgerWriter]

    public init(count: Int, options: PostgresConnectionOptions, batchEventsMax: Int, flushIntervalMilliseconds: Int,
                queueEventsMax: Int, logger: Logger, onCommit: @escaping @Sendable (CommittedBatch) -> Void,
                onRefused: @escaping @Sendable (UsageEvent, String) -> Void = { _, _ in }) {
        precondition(count >= 1, "at least one ledger writer")
        writers = (0..<count).map { _ in
            LedgerWriter(options: options, batchEventsMax: batchEventsMax, flushIntervalMilliseconds: flushIntervalMilliseconds,
                         queueEventsMax: queueEventsMax, logger: logger, onCommit: onCommit, onRefused: onRefused)
        }
    }

    /// The writer that owns this call.
    public func writer(for callID: String) -> LedgerWriter {
        writers[stableIndex(of: callID, count: writers.count)]
    }

    public func start() { writers.forEach { $0.start() } }

    /// Whether a writer cannot commit right now.
    public var isInOutage: Bool { writers.contains(where: \.isInOutage) }

    /// Commits everything queued in every writer, then stops them (in parallel).
    public func drainAndStop(timeoutSeconds: Double) {
        DispatchQueue.concurrentPerform(iterations: writers.count) { writers[$0].drainAndStop(timeoutSeconds: timeoutSeconds) }
    }
}
