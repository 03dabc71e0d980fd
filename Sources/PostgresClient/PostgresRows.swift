/// The rows a statement returned, copied out of libpq's result in text format.
public struct PostgresRows: Sendable, RandomAccessCollection {
    /// Column names in result order.
    public let columns: [String]
    /// For `INSERT`/`UPDATE`/`DELETE`/`COPY`: how many rows the command affected.
    public let affectedRows: Int
    private let cells: [[String?]]
    private let columnIndex: [String: Int]

    init(columns: [String], cells: [[String?]], affectedRows: Int) {
        self.columns = columns
        self.cells = cells
        self.affectedRows = affectedRows
        var index: [String: Int] = [:]
        for (position, name) in columns.enumerated() where index[name] == nil { index[name] = position }
        self.columnIndex = index
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { cells.count }
    public subscript(position: Int) -> PostgresRow {
        PostgresRow(cells: cells[position], columnIndex: columnIndex)
    }

    /// The single row of a statement that must return exactly one.
    public func single() throws(PostgresError) -> PostgresRow {
        guard count == 1 else {
            throw PostgresError(kind: .unexpectedResult, message: "expected exactly one row, got \(count)")
        }
        return self[0]
    }
}

/// One result row; values are decoded by column name.
public struct PostgresRow: Sendable {
    let cells: [String?]
    let columnIndex: [String: Int]

    /// The raw text of a column, `nil` for SQL NULL.
    public func text(_ column: String) throws(PostgresError) -> String? {
        guard let position = columnIndex[column] else {
            throw PostgresError(kind: .unexpectedResult, message: "the result has no column '\(column)'")
        }
        return cells[position]
    }

    /// A non-NULL column decoded as `T`.
    public func decode<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws(PostgresError) -> T {
        guard let text = try text(column) else {
            throw PostgresError(kind: .unexpectedResult, message: "column '\(column)' is NULL")
        }
        return try T(postgresText: text)
    }

    /// A nullable column decoded as `T`, `nil` for SQL NULL.
    public func decodeIfPresent<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws(PostgresError) -> T? {
        guard let text = try text(column) else { return nil }
        return try T(postgresText: text)
    }
}
