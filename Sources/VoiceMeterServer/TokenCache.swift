import Foundation
import Logging
import PostgresClient
import Synchronization
import VoiceMeterCrypto
import VoiceMeterStore

/// Active bearer tokens by SHA-256 digest, in memory, so authenticating an upgrade never waits
/// for the database. Reloaded on `NOTIFY ingest_tokens` and every few seconds, so a revoked token
/// is refused within seconds.
final class TokenCache: Sendable {
    private let digests = Mutex<[[UInt8]: TokenKind]>([:])
    private let options: PostgresConnectionOptions
    private let refreshMilliseconds: Int32
    private let logger: Logger
    private let stopped = Atomic<Bool>(false)

    init(options: PostgresConnectionOptions, refreshMilliseconds: Int, logger: Logger) throws {
        self.options = options
        self.refreshMilliseconds = Int32(refreshMilliseconds)
        self.logger = logger
        try reload(using: PostgresConnection(options))
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

    func start() {
        let thread = Thread { [self] in self.watch() }
        thread.name = "voicemeter.tokens"
        thread.start()
    }

    func stop() { stopped.store(true, ordering: .relaxed) }

    private func watch() {
        var connection: PostgresConnection?
        var sinceReload: Int32 = 0
        while !stopped.load(ordering: .relaxed) {
            do {
                if connection == nil {
                    let fresh = try PostgresConnection(options)
                    try fresh.listen("ingest_tokens")
                    connection = fresh
                    try reload(using: fresh)
                }
                let notifications = try connection!.waitForNotifications(timeoutMilliseconds: 200)
                sinceReload += 200
                if !notifications.isEmpty || sinceReload >= refreshMilliseconds {
                    try reload(using: connection!)
                    sinceReload = 0
                }
            } catch {
                logger.warning("token cache lost the database; keeping the last tokens", metadata: ["error": "\(error)"])
                connection = nil
                usleep(500_000)
            }
        }
    }

    private func reload(using connection: PostgresConnection) throws {
        var table: [[UInt8]: TokenKind] = [:]
        for row in try connection.query("SELECT token_hash, kind FROM ingest_tokens WHERE revoked_at IS NULL") {
            table[try row.decode("token_hash", as: PostgresBytes.self).bytes] = TokenKind(rawValue: try row.decode("kind"))
        }
        digests.withLock { $0 = table }
    }
}
