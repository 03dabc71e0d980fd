import PostgresClient
import VoiceMeterCrypto

/// What a bearer token lets its holder do.
public enum TokenKind: String, Sendable, CaseIterable {
    /// Streams usage frames to `/v1/stream`.
    case ingest
    /// Reads the finance API and dashboard.
    case finance

    /// The token's visible prefix, so a leaked token's purpose is recognisable.
    var secretPrefix: String { self == .ingest ? "vmi" : "vmf" }
}

/// A token as listed: never the secret itself.
public struct TokenRecord: Sendable, Equatable {
    public var name: String
    public var kind: TokenKind
    /// The first characters of the secret, e.g. `vmi_q3Jx`.
    public var prefix: String
    public var createdAt: String
    public var revokedAt: String?
    public var isActive: Bool { revokedAt == nil }
}

/// Why a token operation was refused, phrased for the person at the CLI.
public struct TokenError: Error, CustomStringConvertible, Equatable {
    public var description: String
}

/// Creates, revokes, lists and checks bearer tokens in `ingest_tokens`; only SHA-256 digests are stored.
public struct TokenStore {
    private let connection: PostgresConnection

    public init(connection: PostgresConnection) {
        self.connection = connection
    }

    /// Creates a token and returns its secret, which is not stored and cannot be shown again.
    public func create(name: String, kind: TokenKind) throws -> String {
        guard name.range(of: #"^[A-Za-z0-9._-]{1,64}$"#, options: .regularExpression) != nil else {
            throw TokenError(description: "token name '\(name)' is not allowed: use 1 to 64 letters, digits, '.', '_' or '-'")
        }
        let secret = SecretToken.generate(prefix: kind.secretPrefix)
        do {
            try connection.query(
                "INSERT INTO ingest_tokens (name, kind, token_hash, token_prefix) VALUES ($1, $2, $3, $4)",
                [name, kind.rawValue, PostgresBytes(SHA256.digest(secret)), String(secret.prefix(8))]
            )
        } catch {
            guard error.sqlState == .uniqueViolation, error.constraint == "ingest_tokens_name_key" else { throw error }
            throw TokenError(description: "a token named '\(name)' already exists; pick another name or revoke it first")
        }
        return secret
    }

    /// Revokes the token called `name`; later authentication with it fails.
    public func revoke(name: String) throws {
        let result = try connection.query(
            "UPDATE ingest_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL", [name]
        )
        guard result.affectedRows == 1 else {
            let exists = try !connection.query("SELECT 1 FROM ingest_tokens WHERE name = $1", [name]).isEmpty
            throw TokenError(description: exists
                ? "token '\(name)' is already revoked"
                : "there is no token named '\(name)'; `voicemeter tokens list` shows the names")
        }
    }

    /// Every token, oldest first.
    public func list() throws -> [TokenRecord] {
        try connection.query("""
            SELECT name, kind, token_prefix,
                   to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS created_at,
                   to_char(revoked_at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS revoked_at
            FROM ingest_tokens ORDER BY id
            """).map { row in
            TokenRecord(
                name: try row.decode("name"),
                kind: TokenKind(rawValue: try row.decode("kind")) ?? .ingest,
                prefix: try row.decode("token_prefix"),
                createdAt: try row.decode("created_at"),
                revokedAt: try row.decodeIfPresent("revoked_at")
            )
        }
    }

    /// Every active token's SHA-256 digest and kind, for an in-memory authentication table.
    public func activeDigests() throws -> [[UInt8]: TokenKind] {
        var table: [[UInt8]: TokenKind] = [:]
        for row in try connection.query("SELECT token_hash, kind FROM ingest_tokens WHERE revoked_at IS NULL") {
            table[try row.decode("token_hash", as: PostgresBytes.self).bytes] = TokenKind(rawValue: try row.decode("kind"))
        }
        return table
    }

    /// The active token whose secret is `secret`, or `nil` (unknown or revoked).
    public func authenticate(_ secret: String) throws -> TokenRecord? {
        let digest = SHA256.digest(secret)
        let rows = try connection.query("""
            SELECT name, kind, token_prefix, token_hash,
                   to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS created_at
            FROM ingest_tokens WHERE token_hash = $1 AND revoked_at IS NULL
            """, [PostgresBytes(digest)])
        guard let row = rows.first,
              constantTimeEquals(try row.decode("token_hash", as: PostgresBytes.self).bytes, digest),
              let kind = TokenKind(rawValue: try row.decode("kind"))
        else { return nil }
        return TokenRecord(
            name: try row.decode("name"), kind: kind, prefix: try row.decode("token_prefix"),
            createdAt: try row.decode("created_at"), revokedAt: nil
        )
    }
}
