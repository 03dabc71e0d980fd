import Logging
import PostgresClient
import VoiceMeterCrypto
import VoiceMeterStore
import WebSocketTransport

/// Active bearer tokens by SHA-256 digest, in memory, so authenticating an upgrade never waits
/// for the database, and the token each stream connection opened with. Reloaded on
/// `NOTIFY ingest_tokens` and every few seconds: a revoked token (or one whose kind changed) is
/// refused from then on, and its open connections are handed to `onRevoked` to be closed.
package final class TokenCache: Sendable {
    private let digests: Locked<[[UInt8]: TokenGrant]>
    /// The digest of the token each open stream connection was accepted with.
    private let holders = Locked<[ConnectionID: [UInt8]]>([:])
    private let watcher: TableWatcher
    private let onRevoked: @Sendable ([ConnectionID]) -> Void

    /// - Parameter onRevoked: called on the watcher's thread with the connections whose token is
    ///   no longer an active ingest token (they are forgotten here).
    package init(options: PostgresConnectionOptions, refreshMilliseconds: Int, logger: Logger,
         onRevoked: @escaping @Sendable ([ConnectionID]) -> Void) throws {
        let digests = Locked(try TokenStore(connection: PostgresConnection(options)).activeDigests())
        self.digests = digests
        self.onRevoked = onRevoked
        watcher = TableWatcher(options: options, channel: "ingest_tokens", refreshMilliseconds: refreshMilliseconds, logger: logger) { [digests, holders] connection in
            let table = try TokenStore(connection: connection).activeDigests()
            digests.withLock { $0 = table }
            let revoked = holders.withLock { held in
                let revoked = held.filter { table[$0.value]?.kind != .ingest }.map(\.key)
                for connection in revoked { held[connection] = nil }
                return revoked
            }
            if !revoked.isEmpty { onRevoked(revoked) }
        }
    }

    /// The kind of the active token with this secret, or `nil`.
    ///
    /// Lookup is by the SHA-256 of the presented secret: any timing difference of the table lookup
    /// depends on digest bits an attacker cannot steer towards a stored digest (that would need a
    /// preimage), so it reveals nothing about stored tokens.
    package func kind(of secret: String) -> TokenKind? {
        let digest = SHA256.digest(secret)
        return digests.withLock { $0[digest]?.kind }
    }

    /// Whether the token `connection` was opened with may open (or resume) a call for `userID`.
    package func connection(_ connection: ConnectionID, mayActFor userID: String) -> Bool {
        guard let digest = holders.withLock({ $0[connection] }) else { return false }
        return digests.withLock { $0[digest] }?.mayActFor(userID) ?? false
    }

    /// A stream connection was accepted with this token. If the token was revoked meanwhile it
    /// goes to `onRevoked` at once (a reload updates the table before it looks at the holders, so
    /// one of the two sees the other).
    package func connectionOpened(_ connection: ConnectionID, token: String) {
        let digest = SHA256.digest(token)
        holders.withLock { $0[connection] = digest }
        if digests.withLock({ $0[digest] })?.kind != .ingest {
            holders.withLock { $0[connection] = nil }
            onRevoked([connection])
        }
    }

    package func connectionClosed(_ connection: ConnectionID) {
        holders.withLock { $0[connection] = nil }
    }

    package func start() { watcher.start() }
    package func stop() { watcher.stop() }
}
