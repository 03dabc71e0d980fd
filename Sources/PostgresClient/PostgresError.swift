/// A PostgreSQL or libpq failure as a typed value.
///
/// `description` carries the server's message, SQLSTATE and constraint name; it never includes the
/// connection string (so never a password) nor the SQL text that failed.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, coarsely: enough to choose between retrying, reconnecting and reporting.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// The server could not be reached or refused the connection (bad host, auth, database).
        public static let connectionFailed = Kind("connection failed")
        /// The connection broke during a command; the command's outcome is unknown.
        public static let connectionLost = Kind("connection lost")
        /// The server executed the command and reported an error (see `sqlState`).
        public static let server = Kind("server error")
        /// A result did not have the shape the caller asked for (a value that does not decode, a missing column).
        public static let unexpectedResult = Kind("unexpected result")
        /// The caller passed something libpq cannot send (for example a NUL byte inside a string).
        public static let invalidArgument = Kind("invalid argument")
    }

    public var kind: Kind
    /// The five-character SQLSTATE for server errors, e.g. `23505` for a unique violation.
    public var sqlState: SQLState?
    /// The primary human-readable message.
    public var message: String
    public var detail: String?
    public var hint: String?
    /// The constraint a server error names, e.g. `service_pricing_no_overlap`.
    public var constraint: String?

    public init(
        kind: Kind, sqlState: SQLState? = nil, message: String,
        detail: String? = nil, hint: String? = nil, constraint: String? = nil
    ) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
        self.constraint = constraint
    }

    public var description: String {
        var text = "PostgreSQL \(kind): \(message)"
        if let sqlState { text += " (SQLSTATE \(sqlState.code))" }
        if let constraint { text += " [constraint \(constraint)]" }
        if let detail { text += " — \(detail)" }
        if let hint { text += " Hint: \(hint)" }
        return text
    }

    /// Whether the data itself was refused (SQLSTATE classes 22, data exception, and 23,
    /// integrity constraint violation, or a value libpq cannot send): the same rows fail every
    /// retry. Every other failure (a read-only or demoted server, a revoked privilege, a lock
    /// timeout, a missing table, a lost connection) says nothing about the rows.
    public var isDataError: Bool {
        if kind == .invalidArgument { return true }
        guard kind == .server, let sqlState else { return false }
        return sqlState.errorClass == "22" || sqlState.errorClass == "23"
    }

    /// Whether a fresh attempt can succeed without a change by the caller (the connection or server went away).
    public var isTransient: Bool {
        if kind == .connectionFailed || kind == .connectionLost { return true }
        guard let sqlState else { return false }
        return sqlState.isTransient
    }
}

/// A SQLSTATE code (PostgreSQL appendix A). Named constants cover the ones this project handles.
public struct SQLState: Hashable, Sendable, CustomStringConvertible {
    public let code: String
    public init(_ code: String) { self.code = code }
    public var description: String { code }

    /// The two-character class, e.g. `23` for integrity constraint violations.
    public var errorClass: Substring { code.prefix(2) }

    public static let uniqueViolation = SQLState("23505")
    public static let foreignKeyViolation = SQLState("23503")
    public static let checkViolation = SQLState("23514")
    public static let notNullViolation = SQLState("23502")
    public static let exclusionViolation = SQLState("23P01")
    public static let serializationFailure = SQLState("40001")
    public static let deadlockDetected = SQLState("40P01")
    public static let undefinedTable = SQLState("42P01")
    public static let insufficientPrivilege = SQLState("42501")
    public static let diskFull = SQLState("53100")
    public static let outOfMemory = SQLState("53200")
    public static let tooManyConnections = SQLState("53300")
    public static let adminShutdown = SQLState("57P01")
    public static let crashShutdown = SQLState("57P02")
    public static let cannotConnectNow = SQLState("57P03")

    /// Retrying later can succeed: serialization failures, deadlocks, resource exhaustion, shutdowns,
    /// connection exceptions (class 08).
    public var isTransient: Bool {
        switch errorClass {
        case "08", "40", "53", "57": return true
        default: return false
        }
    }
}
