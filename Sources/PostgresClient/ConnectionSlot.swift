/// A connection used only from one serial queue, opened on first use and after failures.
///
/// `@unchecked Sendable` is safe because its owners call `use` only from their one serial queue
/// (the call registry's, the finance API's), so the connection never has two users at once.
public final class ConnectionSlot: @unchecked Sendable {
    private let options: PostgresConnectionOptions
    private var connection: PostgresConnection?

    public init(options: PostgresConnectionOptions) {
        self.options = options
    }

    /// Runs `body` with the connection, opening it first if needed; a transient failure drops it
    /// (the next use opens a new one).
    public func use<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        do {
            if connection == nil { connection = try PostgresConnection(options) }
            return try body(connection!)
        } catch let error as PostgresError where error.isTransient {
            connection = nil
            throw error
        }
    }
}
