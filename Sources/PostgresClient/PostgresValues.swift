/// A Swift value sent as a query parameter in PostgreSQL's text format.
///
/// Parameters always travel separately from the SQL text (`PQexecParams`), so no value is ever
/// spliced into a statement.
public protocol PostgresEncodable {
    /// The text form PostgreSQL parses for this value, or `nil` for SQL NULL.
    var postgresText: String? { get }
}

/// A Swift value read from a column in PostgreSQL's text format.
public protocol PostgresDecodable {
    init(postgresText: String) throws(PostgresError)
}

extension String: PostgresEncodable, PostgresDecodable {
    public var postgresText: String? { self }
    public init(postgresText: String) { self = postgresText }
}

/// Integers travel as their decimal text.
extension PostgresEncodable where Self: FixedWidthInteger {
    public var postgresText: String? { String(self) }
}

extension PostgresDecodable where Self: FixedWidthInteger {
    public init(postgresText: String) throws(PostgresError) {
        guard let value = Self(postgresText) else { throw .undecodable(postgresText, as: "\(Self.self)") }
        self = value
    }
}

extension Int: PostgresEncodable, PostgresDecodable {}
extension Int32: PostgresEncodable, PostgresDecodable {}
extension Int64: PostgresEncodable, PostgresDecodable {}

extension Bool: PostgresEncodable, PostgresDecodable {
    public var postgresText: String? { self ? "t" : "f" }
    public init(postgresText: String) throws(PostgresError) {
        switch postgresText {
        case "t", "true": self = true
        case "f", "false": self = false
        default: throw .undecodable(postgresText, as: "Bool")
        }
    }
}

extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    public var postgresText: String? { self?.postgresText }
}

/// Binary data for a `bytea` column, sent and read in PostgreSQL's hex format (`\x0a1b`).
public struct PostgresBytes: Hashable, Sendable, PostgresEncodable, PostgresDecodable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var postgresText: String? { String(decoding: hexFormat, as: UTF8.self) }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// The hex format's text as bytes: `\x` and two lowercase digits per byte.
    var hexFormat: [UInt8] {
        var text: [UInt8] = []
        text.reserveCapacity(2 + bytes.count * 2)
        bytes.withUnsafeBytes { Self.appendHexFormat(of: $0, to: &text) }
        return text
    }

    /// Appends the hex format of `bytes` to `text` (a COPY row writes one per event).
    static func appendHexFormat(of bytes: UnsafeRawBufferPointer, to text: inout [UInt8]) {
        text.append(UInt8(ascii: "\\"))
        text.append(UInt8(ascii: "x"))
        for byte in bytes {
            text.append(Self.hexDigits[Int(byte >> 4)])
            text.append(Self.hexDigits[Int(byte & 0x0f)])
        }
    }

    public init(postgresText: String) throws(PostgresError) {
        let utf8 = Array(postgresText.utf8)
        guard utf8.count >= 2, utf8[0] == UInt8(ascii: "\\"), utf8[1] == UInt8(ascii: "x"), utf8.count % 2 == 0 else {
            throw .undecodable(postgresText, as: "bytea (hex format)")
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity((utf8.count - 2) / 2)
        var index = 2
        while index < utf8.count {
            guard let high = hexValue(utf8[index]), let low = hexValue(utf8[index + 1]) else {
                throw .undecodable(postgresText, as: "bytea (hex format)")
            }
            bytes.append(high << 4 | low)
            index += 2
        }
        self.bytes = bytes
    }
}

private func hexValue(_ character: UInt8) -> UInt8? {
    switch character {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): character - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): character - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): character - UInt8(ascii: "A") + 10
    default: nil
    }
}

extension PostgresError {
    static func undecodable(_ text: String, as type: String) -> PostgresError {
        let shown = text.count > 40 ? String(text.prefix(40)) + "…" : text
        return PostgresError(kind: .unexpectedResult, message: "cannot read '\(shown)' as \(type)")
    }
}

/// A one-dimensional array parameter in PostgreSQL's text form (`{"a","b",NULL}`); cast it in SQL,
/// e.g. `unnest($1::bigint[])`. Every element is quoted and escaped.
public struct PostgresTextArray: PostgresEncodable, Sendable {
    public var elements: [String?]
    public init(_ elements: [String?]) { self.elements = elements }
    public init(_ elements: [some PostgresEncodable]) { self.elements = elements.map(\.postgresText) }

    public var postgresText: String? {
        var text = "{"
        for (index, element) in elements.enumerated() {
            if index > 0 { text += "," }
            guard let element else { text += "NULL"; continue }
            text += "\""
            for character in element {
                if character == "\"" || character == "\\" { text += "\\" }
                text.append(character)
            }
            text += "\""
        }
        return text + "}"
    }
}
