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
        let digests = Locked(try TokenStore(connection: PostgresConnection(options)).activeDigests())
        self.digests = digests
        watcher = TableWatcher(options: options, channel: "ingest_tokens", refreshMilliseconds: refreshMilliseconds, logger: logger) { [digests] connection in
            let table = try TokenStore(connection: connection).activeDigests()
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
}
