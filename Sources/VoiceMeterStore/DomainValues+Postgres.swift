import PostgresClient
import VoiceMeterDomain

extension ExactDecimal: PostgresEncodable, PostgresDecodable {
    /// NUMERIC travels as exact decimal text in both directions.
    public var postgresText: String? { description }

    public init(postgresText: String) throws(PostgresError) {
        guard let value = ExactDecimal(postgresText) else {
            throw PostgresError(kind: .unexpectedResult, message: "cannot read '\(postgresText.prefix(40))' as an exact decimal")
        }
        self = value
    }
}

extension Timestamp: PostgresEncodable, PostgresDecodable {
    /// RFC 3339 in UTC, which `timestamptz` parses exactly (microseconds).
    public var postgresText: String? { description }

    public init(postgresText: String) throws(PostgresError) {
        guard let value = Timestamp(rfc3339: postgresText) else {
            throw PostgresError(kind: .unexpectedResult, message: "cannot read '\(postgresText.prefix(40))' as a timestamp")
        }
        self = value
    }
}

extension PayloadHash: PostgresEncodable, PostgresDecodable {
    /// `bytea` in hex format (`api_call_events.payload_hash` holds exactly 32 bytes).
    public var postgresText: String? { PostgresBytes(bytes).postgresText }

    public init(postgresText: String) throws(PostgresError) {
        guard let value = PayloadHash(bytes: try PostgresBytes(postgresText: postgresText).bytes) else {
            throw PostgresError(kind: .unexpectedResult, message: "a payload hash is \(PayloadHash.byteCount) bytes, got '\(postgresText.prefix(40))'")
        }
        self = value
    }
}
