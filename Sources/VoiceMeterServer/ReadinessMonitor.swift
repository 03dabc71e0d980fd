import Foundation
import PostgresClient
import Synchronization
import VoiceMeterStore

/// Re-checks every interval that the database answers and its migrations are current, for `/readyz`.
final class ReadinessMonitor: Sendable {
    private let status = Mutex<(ready: Bool, reason: String)>((false, "not checked yet"))
    private let options: PostgresConnectionOptions
    private let migrations: MigrationSet
    private let intervalMicroseconds: UInt32
    private let stopped = Atomic<Bool>(false)

    init(options: PostgresConnectionOptions, migrations: MigrationSet, intervalMilliseconds: Int) {
        self.options = options
        self.migrations = migrations
        self.intervalMicroseconds = UInt32(intervalMilliseconds) * 1_000
    }

    var current: (ready: Bool, reason: String) { status.withLock { $0 } }

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
            status.withLock {
                $0 = migrationStatus.isCurrent
                    ? (true, "ok")
                    : (false, "\(migrationStatus.pending.count) migration(s) pending: run voicemeter migrate")
            }
            return connection
        } catch {
            status.withLock { $0 = (false, "database unreachable: \(error)") }
            return nil
        }
    }
}
