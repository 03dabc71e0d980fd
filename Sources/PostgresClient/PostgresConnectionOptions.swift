import CLibPQ

/// Where and how to connect: a libpq connection string (a `postgresql://` URI or `key=value` conninfo),
/// plus keyword overrides applied on top of it (for example a different `dbname`).
public struct PostgresConnectionOptions: Sendable, CustomStringConvertible {
    /// The connection string as given; it may contain a password, so it is never printed.
    public var connectionString: String
    /// libpq keywords that replace the connection string's values, applied in order.
    public var overrides: [(keyword: String, value: String)]

    public init(connectionString: String, overrides: [(keyword: String, value: String)] = []) {
        self.connectionString = connectionString
        self.overrides = overrides
    }

    /// The same server with another database.
    public func database(_ name: String) -> PostgresConnectionOptions {
        var copy = self
        copy.overrides.append((keyword: "dbname", value: name))
        return copy
    }

    /// Checks that libpq can parse the connection string, with libpq's reason when it cannot.
    public func validate() throws(PostgresError) {
        var errorMessage: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(connectionString, &errorMessage) else {
            let reason = errorMessage.map { String(cString: $0) } ?? "not a connection string"
            if let errorMessage { PQfreemem(errorMessage) }
            throw PostgresError(
                kind: .invalidArgument,
                message: "DATABASE_URL is not a valid PostgreSQL connection string: \(trimmed(reason))",
                hint: "Use a URI such as postgresql://user@host:5432/dbname or key=value pairs such as 'host=/run/postgresql dbname=voicemeter'."
            )
        }
        PQconninfoFree(options)
    }

    /// The whole target as one `key='value'` conninfo string, overrides applied, for handing to a
    /// child process. It includes any password: never log it (use `description`).
    public var conninfo: String {
        var values: [(String, String)] = []
        var errorMessage: UnsafeMutablePointer<CChar>?
        if let options = PQconninfoParse(connectionString, &errorMessage) {
            var cursor = options
            while let keyword = cursor.pointee.keyword {
                if let value = cursor.pointee.val { values.append((String(cString: keyword), String(cString: value))) }
                cursor += 1
            }
            PQconninfoFree(options)
        } else if let errorMessage {
            PQfreemem(errorMessage)
        }
        for (keyword, value) in overrides {
            values.removeAll { $0.0 == keyword }
            values.append((keyword, value))
        }
        return values.map { keyword, value in
            var quoted = ""
            for character in value {
                if character == "\\" || character == "'" { quoted.append("\\") }
                quoted.append(character)
            }
            return "\(keyword)='\(quoted)'"
        }.joined(separator: " ")
    }

    /// Keywords whose values are secrets (libpq's `password` and the client key's `sslpassword`).
    static func isSecret(_ keyword: String) -> Bool { keyword == "password" || keyword == "sslpassword" }

    /// The connection's target with any password replaced by `***`, for logs and `--print-config`.
    public var description: String {
        var parts: [String] = []
        var errorMessage: UnsafeMutablePointer<CChar>?
        if let options = PQconninfoParse(connectionString, &errorMessage) {
            var cursor = options
            while let keyword = cursor.pointee.keyword {
                if let value = cursor.pointee.val {
                    let key = String(cString: keyword)
                    let shown = Self.isSecret(key) ? "***" : String(cString: value)
                    parts.append("\(key)=\(shown)")
                }
                cursor += 1
            }
            PQconninfoFree(options)
        } else {
            if let errorMessage { PQfreemem(errorMessage) }
            parts.append("<unparsable connection string>")
        }
        for (keyword, value) in overrides {
            parts.append("\(keyword)=\(Self.isSecret(keyword) ? "***" : value)")
        }
        return parts.joined(separator: " ")
    }
}

func trimmed(_ message: String) -> String {
    var text = Substring(message)
    while let last = text.last, last.isWhitespace { text = text.dropLast() }
    return String(text)
}

/// How long a session may wait on a database that does not answer: a dead or partitioned server
/// is detected in seconds (TCP keepalives, `tcp_user_timeout`, `connect_timeout`) and a statement
/// or lock wait is abandoned (`statement_timeout`, `lock_timeout`,
/// `idle_in_transaction_session_timeout`), so the session is replaced instead of blocking its owner.
public struct SessionLimits: Sendable, Equatable {
    public var connectTimeoutSeconds: Int
    public var statementTimeoutMilliseconds: Int
    public var lockTimeoutMilliseconds: Int
    public var idleInTransactionMilliseconds: Int
    /// Keepalive probes after this much silence, this often, this many times (a silent peer is
    /// dropped after 11 s); data the peer's kernel has not acknowledged for
    /// `tcpUserTimeoutMilliseconds` also drops the connection. Both are about the network, not the
    /// database's pace: a busy or stopped PostgreSQL's kernel still acknowledges, so a long
    /// statement is never cut by them, while a partition is detected in about 10 s.
    public var keepalivesIdleSeconds = 5
    public var keepalivesIntervalSeconds = 2
    public var keepalivesCount = 3
    public var tcpUserTimeoutMilliseconds = 10_000

    /// Limits from a statement timeout: locks wait at most a third of it, an idle transaction
    /// twice it.
    public init(connectTimeoutSeconds: Int, statementTimeoutSeconds: Int) {
        self.connectTimeoutSeconds = connectTimeoutSeconds
        statementTimeoutMilliseconds = statementTimeoutSeconds * 1_000
        lockTimeoutMilliseconds = max(1, statementTimeoutSeconds * 1_000 / 3)
        idleInTransactionMilliseconds = statementTimeoutSeconds * 2_000
    }
}

extension PostgresConnectionOptions {
    /// These options with `limits` applied where the connection string does not set them itself
    /// (its own values win); server settings are added to any `options` it has.
    public func limited(by limits: SessionLimits) -> PostgresConnectionOptions {
        var given: [String: String] = [:]
        var errorMessage: UnsafeMutablePointer<CChar>?
        if let parsed = PQconninfoParse(connectionString, &errorMessage) {
            var cursor = parsed
            while let keyword = cursor.pointee.keyword {
                if let value = cursor.pointee.val { given[String(cString: keyword)] = String(cString: value) }
                cursor += 1
            }
            PQconninfoFree(parsed)
        } else if let errorMessage {
            PQfreemem(errorMessage)
        }
        for (keyword, value) in overrides { given[keyword] = value }
        var copy = self
        for (keyword, value) in [("connect_timeout", "\(limits.connectTimeoutSeconds)"), ("keepalives", "1"),
                                 ("keepalives_idle", "\(limits.keepalivesIdleSeconds)"), ("keepalives_interval", "\(limits.keepalivesIntervalSeconds)"),
                                 ("keepalives_count", "\(limits.keepalivesCount)"), ("tcp_user_timeout", "\(limits.tcpUserTimeoutMilliseconds)")]
        where given[keyword] == nil {
            copy.overrides.append((keyword, value))
        }
        let existing = given["options"] ?? ""
        var settings: [String] = []
        for (name, milliseconds) in [("statement_timeout", limits.statementTimeoutMilliseconds), ("lock_timeout", limits.lockTimeoutMilliseconds),
                                     ("idle_in_transaction_session_timeout", limits.idleInTransactionMilliseconds)]
        where !existing.contains(name) {
            settings.append("-c \(name)=\(milliseconds)")
        }
        if !settings.isEmpty {
            copy.overrides.append(("options", ([existing] + settings).filter { !$0.isEmpty }.joined(separator: " ")))
        }
        return copy
    }
}
