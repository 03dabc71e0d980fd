import CLibPQ

extension PostgresConnection {
    /// Streams rows into `COPY … FROM STDIN` (text format) and returns how many rows the server took.
    ///
    /// `copyStatement` is the full statement, e.g. `COPY staging (a, b) FROM STDIN`. `body` appends
    /// rows to the writer; data goes to the server in chunks of about 64 KiB. If `body` throws, the
    /// COPY is aborted on the server and the error is rethrown.
    @discardableResult
    public func copyIn(_ copyStatement: String, _ body: (inout PostgresCopyWriter) throws -> Void) throws -> Int {
        try reconnectIfNeeded()
        guard let start = PQexec(connectionHandle, copyStatement) else { throw connectionError() }
        guard PQresultStatus(start) == PGRES_COPY_IN else {
            defer { PQclear(start) }
            if PQresultStatus(start) == PGRES_FATAL_ERROR { throw serverError(start) }
            throw PostgresError(kind: .unexpectedResult, message: "the statement did not start COPY FROM STDIN")
        }
        PQclear(start)

        var writer = PostgresCopyWriter(connection: self)
        do {
            try body(&writer)
            try writer.flush()
            guard PQputCopyEnd(connectionHandle, nil) == 1 else { throw connectionError() }
        } catch {
            _ = PQputCopyEnd(connectionHandle, "aborted by the client")
            drainResults()
            throw error
        }
        let rows = try consume(PQgetResult(connectionHandle))
        drainResults()
        return rows.affectedRows
    }

    /// Reads and discards results until libpq reports none are left.
    func drainResults() {
        while let leftover = PQgetResult(connectionHandle) { PQclear(leftover) }
    }

    func putCopyData(_ bytes: [UInt8]) throws(PostgresError) {
        let status = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { PQputCopyData(connectionHandle, $0.baseAddress, Int32($0.count)) }
        }
        guard status == 1 else { throw connectionError() }
    }
}

/// Encodes rows in COPY's text format and sends them in chunks.
public struct PostgresCopyWriter: ~Copyable {
    private let connection: PostgresConnection
    private var buffer: [UInt8] = []
    private static let chunkBytes = 64 * 1024
    /// Rows appended so far.
    public private(set) var rowCount = 0

    init(connection: PostgresConnection) {
        self.connection = connection
        buffer.reserveCapacity(Self.chunkBytes + 1024)
    }

    /// Fields appended to the row being written.
    private var fieldsInRow = 0

    /// Appends one row; `nil` is SQL NULL. Values are escaped for COPY's text format.
    public mutating func append(_ values: [String?]) throws(PostgresError) {
        for value in values { try field(value) }
        try endRow()
    }

    /// Appends the next field of the current row; `nil` is SQL NULL. Escaped for COPY's text format.
    public mutating func field(_ value: String?) throws(PostgresError) {
        startField()
        guard let value else {
            buffer.append(UInt8(ascii: "\\"))
            buffer.append(UInt8(ascii: "N"))
            return
        }
        let appended = value.utf8.withContiguousStorageIfAvailable { appendEscaped($0) }
            ?? Array(value.utf8).withUnsafeBufferPointer { appendEscaped($0) }
        guard appended else { throw PostgresError(kind: .invalidArgument, message: "a COPY value contains a NUL byte") }
    }

    /// Appends the next field, written by `write` straight into the row, from text the caller
    /// knows needs no escaping (ASCII digits and punctuation: numbers, timestamps).
    public mutating func field(unescaped write: (inout [UInt8]) -> Void) {
        startField()
        write(&buffer)
    }

    /// Appends the next field as `bytea` from raw bytes (hex format, its backslash escaped for COPY).
    public mutating func field(bytea bytes: UnsafeRawBufferPointer) {
        startField()
        buffer.append(UInt8(ascii: "\\"))
        PostgresBytes.appendHexFormat(of: bytes, to: &buffer)
    }

    /// Ends the current row (sending a chunk when enough has built up).
    public mutating func endRow() throws(PostgresError) {
        buffer.append(UInt8(ascii: "\n"))
        fieldsInRow = 0
        rowCount += 1
        if buffer.count >= Self.chunkBytes { try flush() }
    }

    private mutating func startField() {
        if fieldsInRow > 0 { buffer.append(UInt8(ascii: "\t")) }
        fieldsInRow += 1
    }

    /// Appends one value's bytes escaped for COPY's text format; `false` (nothing appended
    /// usefully) when the value holds a NUL byte, which COPY cannot carry.
    private mutating func appendEscaped(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        // Most values need no escaping: copied whole.
        var needsEscaping = false
        for byte in bytes where byte == UInt8(ascii: "\\") || byte < 0x0E {
            needsEscaping = true
            break
        }
        guard needsEscaping else {
            buffer.append(contentsOf: bytes)
            return true
        }
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\\"): buffer.append(UInt8(ascii: "\\")); buffer.append(UInt8(ascii: "\\"))
            case UInt8(ascii: "\t"): buffer.append(UInt8(ascii: "\\")); buffer.append(UInt8(ascii: "t"))
            case UInt8(ascii: "\n"): buffer.append(UInt8(ascii: "\\")); buffer.append(UInt8(ascii: "n"))
            case UInt8(ascii: "\r"): buffer.append(UInt8(ascii: "\\")); buffer.append(UInt8(ascii: "r"))
            case 0: return false
            default: buffer.append(byte)
            }
        }
        return true
    }

    mutating func flush() throws(PostgresError) {
        guard !buffer.isEmpty else { return }
        try connection.putCopyData(buffer)
        buffer.removeAll(keepingCapacity: true)
    }
}
