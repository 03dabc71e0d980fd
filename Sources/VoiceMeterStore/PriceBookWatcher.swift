import Logging
import PostgresClient
import VoiceMeterDomain

/// Keeps a live `PriceBook`: loads it, then reloads it whenever `service_pricing` changes
/// (`LISTEN service_pricing`, announced by a trigger), so a running server prices with a new
/// version within a second of its commit, without a restart.
public final class PriceBookWatcher: Sendable {
    private let current: Locked<PriceBook>
    private let watcher: TableWatcher

    /// Loads the prices once (failing if the database is unreachable), ready for `start()`.
    public init(options: PostgresConnectionOptions, logger: Logger) throws {
        let current = Locked(try PriceStore(connection: PostgresConnection(options)).load())
        self.current = current
        watcher = TableWatcher(options: options, channel: "service_pricing", logger: logger) { [current] connection in
            let book = try PriceStore(connection: connection).load()
            current.withLock { $0 = book }
            logger.info("prices reloaded", metadata: ["prices.versions": "\(book.versions.count)"])
        }
    }

    /// The prices as last loaded.
    public var book: PriceBook { current.value }

    public func start() { watcher.start() }
    public func stop() { watcher.stop() }
}
