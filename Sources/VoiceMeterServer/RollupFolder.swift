import Foundation
import Logging
import PostgresClient
import Synchronization
import VoiceMeterStore

/// Folds the ledger's journaled period deltas into `cost_summaries` every interval, on a thread
/// and connection of its own, and once more at shutdown. A failed fold leaves the journal as it
/// was (readers count it either way) and is retried at the next interval on a new connection.
final class RollupFolder: Sendable {
    private let options: PostgresConnectionOptions
    private let intervalMilliseconds: Int
    private let logger: Logger
    private let metrics = LedgerMetrics()
    private let stopped = Atomic<Bool>(false)
    /// Serializes the thread's folds with the final one at shutdown.
    private let connection = Mutex<PostgresConnection?>(nil)
    /// How long one sleep lasts before the stop flag is checked again.
    private static let pollMilliseconds = 200

    init(options: PostgresConnectionOptions, intervalSeconds: Int, logger: Logger) {
        self.options = options
        self.intervalMilliseconds = intervalSeconds * 1_000
        self.logger = logger
    }

    func start() {
        let thread = Thread { [self] in
            var waited = 0
            while !self.stopped.load(ordering: .relaxed) {
                usleep(UInt32(Self.pollMilliseconds) * 1_000)
                waited += Self.pollMilliseconds
                if waited >= self.intervalMilliseconds, !self.stopped.load(ordering: .relaxed) {
                    self.fold()
                    waited = 0
                }
            }
        }
        thread.name = "voicemeter.rollups"
        thread.start()
    }

    /// Stops the thread and folds what the last commits journaled.
    func stop() {
        stopped.store(true, ordering: .relaxed)
        fold()
    }

    private func fold() {
        connection.withLock { connection in
            do {
                if connection == nil { connection = try PostgresConnection(options) }
                let started = DispatchTime.now().uptimeNanoseconds
                metrics.journalRowsFolded.increment(by: try Rollups.fold(on: connection!))
                metrics.foldDuration.recordNanoseconds(DispatchTime.now().uptimeNanoseconds - started)
            } catch {
                logger.warning("could not fold the rollup journal; budgets and reports still count it, retrying next interval",
                               metadata: ["error": "\(error)"])
                connection = nil
            }
        }
    }
}
