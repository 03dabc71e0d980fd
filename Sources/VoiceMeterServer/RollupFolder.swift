import Foundation
import Logging
import PostgresClient
import Synchronization
import VoiceMeterStore

/// Folds the ledger's journaled period deltas into `cost_summaries` on a thread and connection
/// of its own: every second one slice of the users, so each user's deltas are folded every
/// `foldSeconds` and the database sees a steady trickle rather than a burst; at shutdown, all.
/// A failed fold leaves the journal as it was (readers count it either way) and its slice is
/// folded again a round later, on a new connection.
final class RollupFolder: Sendable {
    private let options: PostgresConnectionOptions
    private let slices: Int
    private let logger: Logger
    private let metrics = LedgerMetrics()
    private let stopped = Atomic<Bool>(false)
    /// Serializes the thread's folds with the final one at shutdown.
    private let connection = Mutex<PostgresConnection?>(nil)
    /// How long one sleep lasts before the stop flag is checked again.
    private static let pollMilliseconds = 200

    init(options: PostgresConnectionOptions, foldSeconds: Int, logger: Logger) {
        self.options = options
        self.slices = foldSeconds
        self.logger = logger
    }

    func start() {
        let thread = Thread { [self] in
            var waited = 0
            var slice = 0
            while !self.stopped.load(ordering: .relaxed) {
                usleep(UInt32(Self.pollMilliseconds) * 1_000)
                waited += Self.pollMilliseconds
                if waited >= 1_000, !self.stopped.load(ordering: .relaxed) {
                    self.fold((slice, self.slices))
                    slice = (slice + 1) % self.slices
                    waited = 0
                }
            }
        }
        thread.name = "voicemeter.rollups"
        thread.start()
    }

    /// Stops the thread and folds everything the last commits journaled.
    func stop() {
        stopped.store(true, ordering: .relaxed)
        fold((0, 1))
    }

    private func fold(_ slice: (index: Int, of: Int)) {
        connection.withLock { connection in
            do {
                if connection == nil { connection = try PostgresConnection(options) }
                let started = DispatchTime.now().uptimeNanoseconds
                metrics.journalRowsFolded.increment(by: try Rollups.fold(on: connection!, slice: slice))
                metrics.foldDuration.recordNanoseconds(DispatchTime.now().uptimeNanoseconds - started)
            } catch {
                logger.warning("could not fold the rollup journal; budgets and reports still count it, retrying next round",
                               metadata: ["error": "\(error)"])
                connection = nil
            }
        }
    }
}
