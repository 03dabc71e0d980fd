import Foundation
import Logging
import PostgresClient
import Synchronization
import VoiceMeterStore

/// Why the server is or is not ready, as `/readyz` says it: a code, never the database's text
/// (it names hosts and users); the details go to the log.
enum ReadinessReason: String, Sendable {
    case ok
    case notCheckedYet = "not_checked_yet"
    case databaseUnreachable = "database_unreachable"
    case migrationsPending = "migrations_pending"
    case ledgerCannotCommit = "ledger_cannot_commit"
}

/// Re-checks every interval that the database answers and its migrations are current, for `/readyz`.
final class ReadinessMonitor: Sendable {
    private let status = Mutex<ReadinessReason>(.notCheckedYet)
    private let options: PostgresConnectionOptions
    private let migrations: MigrationSet
    private let intervalMicroseconds: UInt32
    private let logger: Logger
    private let stopped = Atomic<Bool>(false)

    init(options: PostgresConnectionOptions, migrations: MigrationSet, intervalMilliseconds: Int, logger: Logger) {
        self.options = options
        self.migrations = migrations
        self.intervalMicroseconds = UInt32(intervalMilliseconds) * 1_000
        self.logger = logger
    }

    /// `.ok` when the database answered the last check and its migrations are current.
    var current: ReadinessReason { status.withLock { $0 } }

    func start() {
        check(using: nil)
        let thread = Thread { [self] in
            var connection: PostgresConnection?
            while !self.stopped.load(ordering: .relaxed) {
                usleep(self.intervalMicroseconds)
                connection = self.check(using: connection)
            }
        }
        thread.name = "voicemeter.readiness"
        thread.start()
    }

    func stop() { stopped.store(true, ordering: .relaxed) }

    @discardableResult
    private func check(using existing: PostgresConnection?) -> PostgresConnection? {
        do {
            let connection = try existing ?? PostgresConnection(options)
            let migrationStatus = try Migrator(connection: connection, migrations: migrations).status()
            if migrationStatus.isCurrent {
                record(.ok)
            } else {
                record(.migrationsPending, "\(migrationStatus.pending.count) migration(s) pending: run voicemeter migrate")
            }
            return connection
        } catch {
            record(.databaseUnreachable, "\(error)")
            return nil
        }
    }

    /// Stores the result; a change to not ready is logged with its details.
    private func record(_ reason: ReadinessReason, _ detail: String = "") {
        let previous = status.withLock { current in
            defer { current = reason }
            return current
        }
        if reason != previous, reason != .ok {
            logger.warning("not ready", metadata: ["reason": "\(reason.rawValue)", "detail": "\(detail)"])
        }
    }
}
