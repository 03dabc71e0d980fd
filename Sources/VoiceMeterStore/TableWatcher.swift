import Foundation
import Logging
import PostgresClient
import Synchronization

/// Follows a table that announces its changes with `NOTIFY <channel>`: a thread of its own holds a
/// connection that listens, calls `reload` on every notification (and every `refreshMilliseconds`
/// if given), and after a lost connection reconnects with backoff and reloads everything, since
/// notifications sent meanwhile are lost with the session.
public final class TableWatcher: Sendable {
    private let options: PostgresConnectionOptions
    private let channel: String
    private let refreshMilliseconds: Int?
    private let logger: Logger
    private let reload: @Sendable (PostgresConnection) throws -> Void
    private let stopped = Atomic<Bool>(false)
    /// How long one wait for notifications lasts before the stop flag is checked again.
    static let pollIntervalMilliseconds: Int32 = 200

    public init(options: PostgresConnectionOptions, channel: String, refreshMilliseconds: Int? = nil, logger: Logger,
                reload: @escaping @Sendable (PostgresConnection) throws -> Void) {
        self.options = options
        self.channel = channel
        self.refreshMilliseconds = refreshMilliseconds
        self.logger = logger
        self.reload = reload
    }

    public func start() {
        let thread = Thread { [self] in self.watch() }
        thread.name = "voicemeter.watch.\(channel)"
        thread.start()
    }

    /// Asks the thread to finish; it exits within one poll interval.
    public func stop() { stopped.store(true, ordering: .relaxed) }

    private func watch() {
        var backoffMilliseconds: UInt32 = 100
        var connection: PostgresConnection?
        var sinceReload = 0
        while !stopped.load(ordering: .relaxed) {
            do {
                if connection == nil {
                    let fresh = try PostgresConnection(options)
                    try fresh.listen(channel)
                    connection = fresh
                    try reload(fresh)
                    sinceReload = 0
                }
                let notifications = try connection!.waitForNotifications(timeoutMilliseconds: Self.pollIntervalMilliseconds)
                sinceReload += Int(Self.pollIntervalMilliseconds)
                if !notifications.isEmpty || refreshMilliseconds.map({ sinceReload >= $0 }) == true {
                    try reload(connection!)
                    sinceReload = 0
                }
                backoffMilliseconds = 100
            } catch {
                logger.warning("lost the database while following a table; keeping the last copy and retrying", metadata: [
                    "table.channel": "\(channel)", "error": "\(error)", "retry.ms": "\(backoffMilliseconds)",
                ])
                connection = nil
                usleep(backoffMilliseconds * 1_000)
                backoffMilliseconds = min(backoffMilliseconds * 2, 5_000)
            }
        }
    }
}
