/// RFC 4180 CSV: fields separated by commas, optionally in double quotes (with `""` for a quote),
/// records separated by CRLF or LF. Blank lines and lines starting with `#` are skipped.
public enum CSVReader {
    /// A record with the 1-based line it started on.
    public struct Record: Sendable, Hashable {
        public var line: Int
        public var fields: [String]
    }

    public struct SyntaxError: Error, Hashable, CustomStringConvertible {
        public var line: Int
        public var description: String { "line \(line): a quoted field is not closed" }
    }

    public static func records(_ text: String) throws(SyntaxError) -> [Record] {
        var records: [Record] = []
        var fields: [String] = []
        var field = ""
        var quoted = false
        var line = 1
        var recordLine = 1
        var characters = Array(text)[...]
        func endRecord() {
            fields.append(field)
            let isBlank = fields.count == 1 && fields[0].allSatisfy { $0 == " " || $0 == "\t" }
            if !isBlank && !(fields.first?.hasPrefix("#") ?? false) { records.append(Record(line: recordLine, fields: fields)) }
            fields = []
            field = ""
        }
        while let character = characters.popFirst() {
            if quoted {
                if character == "\"" {
                    if characters.first == "\"" { characters.removeFirst(); field.append("\"") } else { quoted = false }
                } else {
                    if character == "\n" { line += 1 }
                    field.append(character)
                }
                continue
            }
            switch character {
            case "\"" where field.isEmpty: quoted = true
            case ",": fields.append(field); field = ""
            case "\r\n", "\n", "\r":
                endRecord()
                line += 1
                recordLine = line
            default: field.append(character)
            }
        }
        guard !quoted else { throw SyntaxError(line: recordLine) }
        if !field.isEmpty || !fields.isEmpty { endRecord() }
        return records
    }

    /// A file read as a header row and the records after it, each as column name → value; names
    /// and values are trimmed of spaces and tabs.
    public struct Table: Sendable {
        public struct Row: Sendable {
            public var line: Int
            public var values: [String: String]
        }

        public var headerLine: Int
        public var columns: [String]
        public var rows: [Row]
    }

    public enum TableError: Error, CustomStringConvertible {
        case syntax(SyntaxError)
        case fieldCount(line: Int, fields: Int, columns: Int)

        public var description: String {
            switch self {
            case .syntax(let error): "\(error)"
            case .fieldCount(let line, let fields, let columns): "line \(line): \(fields) fields for \(columns) columns"
            }
        }
    }

    /// The file as a table; `nil` when it has no records at all. Every record must have as many
    /// fields as the header.
    public static func table(_ text: String) throws(TableError) -> Table? {
        let records: [Record]
        do throws(SyntaxError) { records = try self.records(text) } catch { throw .syntax(error) }
        guard let header = records.first else { return nil }
        let columns = header.fields.map(\.trimmingSpaces)
        var rows: [Table.Row] = []
        for record in records.dropFirst() {
            guard record.fields.count == columns.count else {
                throw .fieldCount(line: record.line, fields: record.fields.count, columns: columns.count)
            }
            rows.append(Table.Row(line: record.line, values: Dictionary(zip(columns, record.fields.map(\.trimmingSpaces)),
                                                                         uniquingKeysWith: { first, _ in first })))
        }
        return Table(headerLine: header.line, columns: columns, rows: rows)
    }
}

extension String {
    /// Without leading and trailing spaces, tabs and carriage returns.
    var trimmingSpaces: String {
        String(drop(while: { $0 == " " || $0 == "\t" || $0 == "\r" }).reversed().drop(while: { $0 == " " || $0 == "\t" || $0 == "\r" }).reversed())
    }
}
