import Foundation
import Logging
import PostgresClient
import Synchronization
import VoiceMeterStore

/// Folds the ledger's journaled period deltas into `cost_summaries` on a thread and connection
/// of its own, sweeping the users in id order a step a second, each step about 1/`foldSeconds`
/// of the journal, so each user is folded about every `foldSeconds` (a journal of a few thousand
/// rows, whole every second) and the database sees a steady trickle instead of a burst; at
/// shutdown, everything. Steps are sized when a sweep starts, from PostgreSQL's estimate of the
/// journal or the rows the last sweep folded, whichever is larger, and double while a sweep runs
/// past `foldSeconds` steps (the journal grew faster than estimated). A failed step leaves the
/// journal as it was (readers count it either way); the sweep starts over a second later, on a
/// new connection.
package final class RollupFolder: Sendable {
    private let options: PostgresConnectionOptions
    private let foldSeconds: Int
    private let logger: Logger
    private let metrics = LedgerMetrics()
    private let stopped = Atomic<Bool>(false)
    /// Where a sweep over the users stands.
    private struct Sweep {
        var connection: PostgresConnection?
        /// The last user folded; empty: the next step starts a sweep.
        var after = ""
        var rowsPerStep = RollupFolder.minimumStepRows
        var steps = 0
        /// Rows folded so far in this sweep, and in the last one.
        var swept = 0
        var lastSwept = 0
    }

    /// Locked so the thread's steps and the final fold at shutdown take turns.
    private let sweep = Mutex(Sweep())
    /// How long one sleep lasts before the stop flag is checked again.
    private static let pollMilliseconds = 200
    /// Rows a step takes at least (a journal this small is folded whole every second) and at most.
    private static let minimumStepRows = 2_000
    private static let maximumStepRows = 1 << 24

    package init(options: PostgresConnectionOptions, foldSeconds: Int, logger: Logger) {
        self.options = options
        self.foldSeconds = foldSeconds
        self.logger = logger
    }

    package func start() {
        let thread = Thread { [self] in
            var waited = 0
            while !self.stopped.load(ordering: .relaxed) {
                usleep(UInt32(Self.pollMilliseconds) * 1_000)
                waited += Self.pollMilliseconds
                if waited >= 1_000, !self.stopped.load(ordering: .relaxed) {
                    self.step(all: false)
                    waited = 0
                }
            }
        }
        thread.name = "voicemeter.rollups"
        thread.start()
    }

    /// Stops the thread and folds everything the last commits journaled, waiting at most
    /// `seconds` for it: a database that does not answer leaves the journal to the next server
    /// (readers count it meanwhile), it never holds up the stop.
    package func stop(within seconds: Int) {
        stopped.store(true, ordering: .relaxed)
        let folded = DispatchSemaphore(value: 0)
        let thread = Thread { [self] in
            step(all: true)
            folded.signal()
        }
        thread.name = "voicemeter.rollups.final"
        thread.start()
        if folded.wait(timeout: .now() + .seconds(seconds)) == .timedOut {
            logger.warning("the rollup journal was not folded before stopping: the database did not answer; the next server folds it",
                           metadata: ["waited.s": "\(seconds)"])
        }
    }

    private func step(all: Bool) {
        sweep.withLock { sweep in
            do {
                if sweep.connection == nil { sweep.connection = try PostgresConnection(options) }
                let connection = sweep.connection!
                if sweep.after.isEmpty {
                    let journalRows = max(try Rollups.estimatedJournalRows(on: connection), sweep.lastSwept)
                    sweep.rowsPerStep = max(Self.minimumStepRows, journalRows / foldSeconds)
                    sweep.steps = 0
                } else if sweep.steps >= foldSeconds {
                    sweep.rowsPerStep = min(sweep.rowsPerStep * 2, Self.maximumStepRows)
                }
                let started = DispatchTime.now().uptimeNanoseconds
                let folded = try Rollups.fold(on: connection, step: all ? nil : (sweep.after, sweep.rowsPerStep))
                metrics.foldDuration.recordNanoseconds(DispatchTime.now().uptimeNanoseconds - started)
                metrics.journalRowsFolded.increment(by: folded.rows)
                sweep.steps += 1
                sweep.swept += folded.rows
                // Past the last user: the next step starts the sweep over.
                sweep.after = all ? "" : folded.lastUser ?? ""
                if sweep.after.isEmpty { (sweep.lastSwept, sweep.swept) = (sweep.swept, 0) }
            } catch {
                logger.warning("could not fold the rollup journal; budgets and reports still count it, retrying in a second",
                               metadata: ["error": "\(error)"])
                sweep = Sweep()
            }
        }
    }
}
