import CLibPQ
#if canImport(Glibc)
import Glibc
#endif

/// One libpq connection with exactly one owner.
///
/// libpq forbids two threads from using a `PGconn` at once, so this class is deliberately not
/// `Sendable`: it can be handed to another thread (region transfer) but never shared. Calls block the
/// calling thread; owners run them on a thread or queue of their own.
///
/// When the server goes away, the command in flight fails with `.connectionLost` (its outcome is
/// unknown), and the next command first re-establishes the connection, including `LISTEN`s.
public final class PostgresConnection {
    private var handle: OpaquePointer
    public let options: PostgresConnectionOptions
    private var listenedChannels: [String] = []
    /// Set when a failure means the session is gone even if libpq has not noticed yet (for example
    /// the server announced its shutdown): the next command resets the connection first.
    private var sessionEnded = false
    /// How many times this connection was re-established after the server went away.
    public private(set) var reconnectCount = 0

    /// Opens a connection and prepares the session (UTC time zone, ISO dates).
    public init(_ options: PostgresConnectionOptions) throws(PostgresError) {
        try options.validate()
        self.options = options
        self.handle = try Self.connect(options)
        try prepareSession()
    }

    deinit {
        PQfinish(handle)
    }

    private static func connect(_ options: PostgresConnectionOptions) throws(PostgresError) -> OpaquePointer {
        // The connection string is expanded as the first `dbname`; later keywords override it.
        var keywords = ["dbname", "fallback_application_name"]
        var values = [options.connectionString, "voicemeter"]
        for (keyword, value) in options.overrides {
            keywords.append(keyword)
            values.append(value)
        }
        let connection = withCStringArray(keywords) { keywordPointers in
            withCStringArray(values) { valuePointers in
                PQconnectdbParams(keywordPointers, valuePointers, 1)
            }
        }
        guard let connection else {
            throw PostgresError(kind: .connectionFailed, message: "libpq could not allocate a connection")
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            let reason = trimmed(String(cString: PQerrorMessage(connection)))
            PQfinish(connection)
            throw PostgresError(
                kind: .connectionFailed, message: reason,
                hint: "Check DATABASE_URL and that the server is running and accepts this user."
            )
        }
        PQsetNoticeProcessor(connection, { _, _ in }, nil)
        return connection
    }

    private func prepareSession() throws(PostgresError) {
        try runScript("SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'")
    }

    /// Whether libpq considers the connection usable right now (no round trip).
    public var isConnected: Bool { PQstatus(handle) == CONNECTION_OK }

    /// The server's process id for this session (useful to terminate it in tests).
    public var backendProcessID: Int32 { PQbackendPID(handle) }

    /// Re-establishes a broken connection, restoring session settings and `LISTEN`s.
    /// Does nothing when the connection is healthy.
    public func reconnectIfNeeded() throws(PostgresError) {
        guard sessionEnded || PQstatus(handle) != CONNECTION_OK else { return }
        PQreset(handle)
        guard PQstatus(handle) == CONNECTION_OK else {
            throw PostgresError(
                kind: .connectionFailed, message: trimmed(String(cString: PQerrorMessage(handle))),
                hint: "The server is unreachable; the command was not sent. Retry later."
            )
        }
        sessionEnded = false
        reconnectCount += 1
        try prepareSession()
        for channel in listenedChannels { try runScript("LISTEN \(try quoteIdentifier(channel))") }
    }

    // MARK: Commands

    /// Runs one parameterized statement (`$1`, `$2`, … in the SQL) and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ parameters: [any PostgresEncodable] = []) throws(PostgresError) -> PostgresRows {
        try reconnectIfNeeded()
        let texts = parameters.map(\.postgresText)
        if texts.contains(where: { $0?.utf8.contains(0) == true }) {
            throw PostgresError(kind: .invalidArgument, message: "a query parameter contains a NUL byte")
        }
        let result = withOptionalCStringArray(texts) { pointers in
            PQexecParams(handle, sql, Int32(texts.count), nil, pointers, nil, nil, 0)
        }
        return try consume(result)
    }

    /// Runs trusted SQL text that may hold several statements and no parameters (migration files,
    /// fixed session commands). Never pass user input here: use `query(_:_:)`.
    public func runScript(_ sql: String) throws(PostgresError) {
        try reconnectIfNeeded()
        _ = try consume(PQexec(handle, sql))
    }

    /// Runs `body` inside `BEGIN … COMMIT`; any error rolls the transaction back and is rethrown.
    public func transaction<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try runScript("BEGIN")
        do {
            let value = try body(self)
            try runScript("COMMIT")
            return value
        } catch {
            if isConnected { try? runScript("ROLLBACK") }
            throw error
        }
    }

    /// Quotes an identifier (a channel or table name) for SQL text.
    public func quoteIdentifier(_ identifier: String) throws(PostgresError) -> String {
        guard let quoted = PQescapeIdentifier(handle, identifier, identifier.utf8.count) else {
            throw PostgresError(kind: .invalidArgument, message: trimmed(String(cString: PQerrorMessage(handle))))
        }
        defer { PQfreemem(quoted) }
        return String(cString: quoted)
    }

    // MARK: Results

    /// Turns a libpq result into rows or a typed error, and frees it.
    func consume(_ result: OpaquePointer?) throws(PostgresError) -> PostgresRows {
        guard let result else { throw connectionError() }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_SINGLE_TUPLE:
            return Self.rows(of: result)
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return PostgresRows(columns: [], cells: [], affectedRows: Self.affectedRows(of: result))
        default:
            throw serverError(result)
        }
    }

    func connectionError() -> PostgresError {
        let reason = trimmed(String(cString: PQerrorMessage(handle)))
        sessionEnded = true
        return PostgresError(kind: .connectionLost, message: reason.isEmpty ? "no result from the server" : reason)
    }

    func serverError(_ result: OpaquePointer) -> PostgresError {
        func field(_ code: Character) -> String? {
            guard let value = PQresultErrorField(result, Int32(code.asciiValue!)) else { return nil }
            return String(cString: value)
        }
        let primary = field("M") ?? trimmed(String(cString: PQresultErrorMessage(result)))
        let sqlState = field("C").map(SQLState.init)
        let brokeConnection = PQstatus(handle) != CONNECTION_OK
        // No SQLSTATE means libpq itself failed (socket closed); class 08 and the 57P0x shutdown
        // codes mean the server is ending this session.
        if brokeConnection || sqlState == nil || sqlState?.errorClass == "08" || sqlState?.code.hasPrefix("57P0") == true {
            sessionEnded = true
        }
        return PostgresError(
            kind: sqlState == nil ? .connectionLost : .server,
            sqlState: sqlState,
            message: primary.isEmpty ? "the connection to the server was lost" : primary,
            detail: field("D"), hint: field("H"), constraint: field("n")
        )
    }

    private static func rows(of result: OpaquePointer) -> PostgresRows {
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        let columns = (0..<columnCount).map { String(cString: PQfname(result, Int32($0))) }
        var cells: [[String?]] = []
        cells.reserveCapacity(rowCount)
        for row in 0..<Int32(rowCount) {
            var values: [String?] = []
            values.reserveCapacity(columnCount)
            for column in 0..<Int32(columnCount) {
                values.append(PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column)))
            }
            cells.append(values)
        }
        return PostgresRows(columns: columns, cells: cells, affectedRows: affectedRows(of: result))
    }

    private static func affectedRows(of result: OpaquePointer) -> Int {
        Int(String(cString: PQcmdTuples(result))) ?? 0
    }

    // MARK: Internals shared with extensions

    var connectionHandle: OpaquePointer { handle }

    func rememberListen(_ channel: String) {
        if !listenedChannels.contains(channel) { listenedChannels.append(channel) }
    }
}

/// Calls `body` with a C array of C strings that lives for the duration of the call.
func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    withOptionalCStringArray(strings.map(Optional.some)) { pointers in
        // A trailing NULL terminates keyword/value arrays for PQconnectdbParams.
        var terminated = Array(UnsafeBufferPointer(start: pointers, count: strings.count))
        terminated.append(nil)
        return terminated.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}

/// Calls `body` with a C array of optional C strings (NULL for `nil`).
func withOptionalCStringArray<R>(_ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let duplicates: [UnsafeMutablePointer<CChar>?] = strings.map { $0.map { strdup($0)! } }
    defer { duplicates.forEach { free($0) } }
    let pointers: [UnsafePointer<CChar>?] = duplicates.map { $0.map { UnsafePointer($0) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
}
