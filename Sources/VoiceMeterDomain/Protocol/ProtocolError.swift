/// An `error` frame's code (protocol v1). Every defect in a client message maps to one.
public enum ProtocolErrorCode: String, Sendable, CaseIterable {
    case invalidJSON = "invalid_json"
    case unknownType = "unknown_type"
    case missingField = "missing_field"
    /// A field is present but not of the documented form (extension: v1 allows new codes).
    case invalidField = "invalid_field"
    case invalidAmount = "invalid_amount"
    case invalidUnit = "invalid_unit"
    case invalidTimestamp = "invalid_timestamp"
    case unknownCall = "unknown_call"
    case frameTooLarge = "frame_too_large"
    case rateLimited = "rate_limited"
    case seqConflict = "seq_conflict"
    /// The server cannot take more right now (database away, queues full); resend later.
    case overloaded
    case `internal`
}

/// What was wrong with a client message, phrased so the sender can fix it.
public struct ProtocolError: Error, Sendable, Hashable {
    public var code: ProtocolErrorCode
    public var message: String
    public var callID: String?
    public var seq: Int64?

    public init(_ code: ProtocolErrorCode, _ message: String, callID: String? = nil, seq: Int64? = nil) {
        self.code = code
        self.message = message
        self.callID = callID
        self.seq = seq
    }
}
