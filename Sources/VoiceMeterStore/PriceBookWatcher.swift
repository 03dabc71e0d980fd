import Foundation
import Logging
import PostgresClient
import Synchronization
import VoiceMeterDomain

/// Keeps a live `PriceBook`: loads it, then reloads it whenever `service_pricing` changes
/// (`LISTEN service_pricing`, announced by a trigger), so a running server prices with a new
/// version within a second of its commit, without a restart.
///
/// A dedicated thread owns the watcher's connection. After a lost connection it reconnects with
/// backoff and reloads everything (notifications sent meanwhile are lost with the session).
public final class PriceBookWatcher: Sendable {
    private let options: PostgresConnectionOptions
    private let logger: Logger
    private let state: Mutex<State>
    /// How long one wait for notifications lasts before the stop flag is checked again.
    static let pollIntervalMilliseconds: Int32 = 200

    private struct State {
        var book: PriceBook
        var reloadCount = 0
        var stopped = false
    }

    /// Loads the prices once (failing if the database is unreachable), ready for `start()`.
    public init(options: PostgresConnectionOptions, logger: Logger) throws {
        self.options = options
        self.logger = logger
        let book = try PriceStore(connection: PostgresConnection(options)).load()
        self.state = Mutex(State(book: book))
    }

    /// The prices in force as last loaded.
    public var book: PriceBook { state.withLock { $0.book } }

    /// How many times the book was reloaded since start (for tests and metrics).
    public var reloadCount: Int { state.withLock { $0.reloadCount } }

    /// Starts the watching thread.
    public func start() {
        let thread = Thread { [self] in self.watch() }
        thread.name = "voicemeter.prices"
        thread.start()
    }

    /// Asks the thread to finish; it exits within one poll interval.
    public func stop() {
        state.withLock { $0.stopped = true }
    }

    private var isStopped: Bool { state.withLock { $0.stopped } }

    private func watch() {
        var backoffMilliseconds: UInt32 = 100
        var connection: PostgresConnection?
        while !isStopped {
            do {
                if connection == nil {
                    let fresh = try PostgresConnection(options)
                    try fresh.listen("service_pricing")
                    connection = fresh
                    try reload(using: fresh)
                }
                let notifications = try connection!.waitForNotifications(timeoutMilliseconds: Self.pollIntervalMilliseconds)
                if !notifications.isEmpty { try reload(using: connection!) }
                backoffMilliseconds = 100
            } catch {
                logger.warning("price watcher lost the database; retrying", metadata: [
                    "error": "\(error)", "retry.ms": "\(backoffMilliseconds)",
                ])
                connection = nil
                usleep(backoffMilliseconds * 1000)
                backoffMilliseconds = min(backoffMilliseconds * 2, 5_000)
            }
        }
    }

    private func reload(using connection: PostgresConnection) throws {
        let book = try PriceStore(connection: connection).load()
        state.withLock {
            $0.book = book
            $0.reloadCount += 1
        }
        logger.info("prices reloaded", metadata: ["prices.versions": "\(book.versions.count)"])
    }
}
