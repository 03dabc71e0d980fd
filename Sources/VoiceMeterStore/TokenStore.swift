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
    /// The `user_id` prefix an ingest token may open calls for; `nil`: any user.
    public var userScope: String?
    public var isActive: Bool { revokedAt == nil }
}

/// What an active token allows, as the server keeps it in memory.
public struct TokenGrant: Sendable, Equatable {
    public var kind: TokenKind
    /// The `user_id` prefix an ingest token may open calls for; `nil`: any user.
    public var userScope: String?

    public init(kind: TokenKind, userScope: String? = nil) {
        self.kind = kind
        self.userScope = userScope
    }

    /// Whether the token may open (or resume) a call for `userID`.
    public func mayActFor(_ userID: String) -> Bool {
        kind == .ingest && (userScope.map(userID.hasPrefix) ?? true)
    }
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
    /// - Parameter userScope: for an ingest token, the `user_id` prefix it may open calls for
    ///   (one tenant); `nil`: any user.
    public func create(name: String, kind: TokenKind, userScope: String? = nil) throws -> String {
        guard name.range(of: #"^[A-Za-z0-9._-]{1,64}$"#, options: .regularExpression) != nil else {
            throw TokenError(description: "token name '\(name)' is not allowed: use 1 to 64 letters, digits, '.', '_' or '-'")
        }
        if let userScope {
            guard kind == .ingest else { throw TokenError(description: "only an ingest token has a user scope; drop --scope for a finance token") }
            guard (1...255).contains(userScope.count) else { throw TokenError(description: "a user scope is a user_id prefix of 1 to 255 characters") }
        }
        let secret = SecretToken.generate(prefix: kind.secretPrefix)
        do {
            try connection.query(
                "INSERT INTO ingest_tokens (name, kind, token_hash, token_prefix, user_scope) VALUES ($1, $2, $3, $4, $5)",
                [name, kind.rawValue, PostgresBytes(SHA256.digest(secret)), String(secret.prefix(8)), userScope]
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
            SELECT name, kind, token_prefix, user_scope,
                   to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS created_at,
                   to_char(revoked_at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS revoked_at
            FROM ingest_tokens ORDER BY id
            """).map { row in
            TokenRecord(
                name: try row.decode("name"),
                kind: TokenKind(rawValue: try row.decode("kind")) ?? .ingest,
                prefix: try row.decode("token_prefix"),
                createdAt: try row.decode("created_at"),
                revokedAt: try row.decodeIfPresent("revoked_at"),
                userScope: try row.decodeIfPresent("user_scope")
            )
        }
    }

    /// Every active token's SHA-256 digest and grant, for an in-memory authentication table.
    public func activeDigests() throws -> [[UInt8]: TokenGrant] {
        var table: [[UInt8]: TokenGrant] = [:]
        for row in try connection.query("SELECT token_hash, kind, user_scope FROM ingest_tokens WHERE revoked_at IS NULL") {
            guard let kind = TokenKind(rawValue: try row.decode("kind")) else { continue }
            table[try row.decode("token_hash", as: PostgresBytes.self).bytes] = TokenGrant(kind: kind, userScope: try row.decodeIfPresent("user_scope"))
        }
        return table
    }

    /// The active token whose secret is `secret`, or `nil` (unknown or revoked).
    public func authenticate(_ secret: String) throws -> TokenRecord? {
        let digest = SHA256.digest(secret)
        let rows = try connection.query("""
            SELECT name, kind, token_prefix, token_hash, user_scope,
                   to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS created_at
            FROM ingest_tokens WHERE token_hash = $1 AND revoked_at IS NULL
            """, [PostgresBytes(digest)])
        guard let row = rows.first,
              constantTimeEquals(try row.decode("token_hash", as: PostgresBytes.self).bytes, digest),
              let kind = TokenKind(rawValue: try row.decode("kind"))
        else { return nil }
        return TokenRecord(
            name: try row.decode("name"), kind: kind, prefix: try row.decode("token_prefix"),
            createdAt: try row.decode("created_at"), revokedAt: nil, userScope: try row.decodeIfPresent("user_scope")
        )
    }
}
