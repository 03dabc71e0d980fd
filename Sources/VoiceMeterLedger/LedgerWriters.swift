// VoiceMeterLedger: the writers that commit usage events and call endings to PostgreSQL in
// batches (an acknowledgement follows a commit, never precedes it) and the rollup folder that
// folds the journal into cost_summaries, and the flow control from the writers' queues back to the
// sockets. It owns its database connections and queues; it knows nothing of WebSockets or of
// metering's decisions: commits and refusals are reported to what its owner gives `start`, and
// paused sockets are resumed through the function its owner gives the backpressure.

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

    /// Events waiting for one writer before `submit` refuses.
    public let queueEventsMax: Int

    public init(count: Int, options: PostgresConnectionOptions, batchEventsMax: Int, flushIntervalMilliseconds: Int,
                queueEventsMax: Int, logger: Logger) {
        precondition(count >= 1, "at least one ledger writer")
        self.queueEventsMax = queueEventsMax
        writers = (0..<count).map { index in
            LedgerWriter(index: index, options: options, batchEventsMax: batchEventsMax, flushIntervalMilliseconds: flushIntervalMilliseconds,
                         queueEventsMax: queueEventsMax, logger: logger)
        }
    }

    /// The writer that owns this call.
    public func writer(for callID: String) -> LedgerWriter {
        writers[stableIndex(of: callID, count: writers.count)]
    }

    /// Starts every writer's thread; each reports to `reports`.
    public func start(reporting reports: LedgerReports) { writers.forEach { $0.start(reporting: reports) } }

    /// Whether a writer cannot commit right now.
    public var isInOutage: Bool { writers.contains(where: \.isInOutage) }

    /// Commits everything queued in every writer, then stops them (in parallel).
    public func drainAndStop(timeoutSeconds: Double) {
        DispatchQueue.concurrentPerform(iterations: writers.count) { writers[$0].drainAndStop(timeoutSeconds: timeoutSeconds) }
    }
}
