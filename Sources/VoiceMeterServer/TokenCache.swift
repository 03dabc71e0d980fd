import Logging
import PostgresClient
import VoiceMeterCrypto
import VoiceMeterStore

/// Active bearer tokens by SHA-256 digest, in memory, so authenticating an upgrade never waits
/// for the database. Reloaded on `NOTIFY ingest_tokens` and every few seconds, so a revoked token
/// is refused within seconds.
final class TokenCache: Sendable {
    private let digests: Locked<[[UInt8]: TokenKind]>
    private let watcher: TableWatcher

    init(options: PostgresConnectionOptions, refreshMilliseconds: Int, logger: Logger) throws {
        let digests = Locked(try Self.load(using: PostgresConnection(options)))
        self.digests = digests
        watcher = TableWatcher(options: options, channel: "ingest_tokens", refreshMilliseconds: refreshMilliseconds, logger: logger) { [digests] connection in
            let table = try Self.load(using: connection)
            digests.withLock { $0 = table }
        }
    }

    /// The kind of the active token with this secret, or `nil`.
    ///
    /// Lookup is by the SHA-256 of the presented secret: any timing difference of the table lookup
    /// depends on digest bits an attacker cannot steer towards a stored digest (that would need a
    /// preimage), so it reveals nothing about stored tokens.
    func kind(of secret: String) -> TokenKind? {
        let digest = SHA256.digest(secret)
        return digests.withLock { $0[digest] }
    }

    func start() { watcher.start() }
    func stop() { watcher.stop() }

    private static func load(using connection: PostgresConnection) throws -> [[UInt8]: TokenKind] {
        var table: [[UInt8]: TokenKind] = [:]
        for row in try connection.query("SELECT token_hash, kind FROM ingest_tokens WHERE revoked_at IS NULL") {
            table[try row.decode("token_hash", as: PostgresBytes.self).bytes] = TokenKind(rawValue: try row.decode("kind"))
        }
        return table
    }
}
