import Dispatch
import PostgresClient
import VoiceMeterDomain
import VoiceMeterStore

/// Registers calls in `calls` on a queue and connection of its own, so a `call.start` never blocks
/// the metering shards; the connection reconnects by itself after an outage.
final class CallRegistry: Sendable {
    private let queue = DispatchQueue(label: "voicemeter.calls")
    private let connection: ConnectionSlot

    init(options: PostgresConnectionOptions) {
        connection = ConnectionSlot(options: options)
    }

    func register(_ start: CallStart, startedAt: Timestamp, completion: @escaping @Sendable (Result<CallRegistration, any Error>) -> Void) {
        queue.async { [connection] in
            completion(Result { try connection.use { try CallStore(connection: $0).register(start, startedAt: startedAt) } })
        }
    }
}

/// A connection used only from one serial queue, opened on first use and after failures.
///
/// `@unchecked Sendable` is safe because `use` is only ever called from the owning serial queue
/// (`CallRegistry.queue`), so the connection never has two users at once.
final class ConnectionSlot: @unchecked Sendable {
    private let options: PostgresConnectionOptions
    private var connection: PostgresConnection?

    init(options: PostgresConnectionOptions) {
        self.options = options
    }

    func use<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        do {
            if connection == nil { connection = try PostgresConnection(options) }
            return try body(connection!)
        } catch let error as PostgresError where error.isTransient {
            connection = nil
            throw error
        }
    }
}
