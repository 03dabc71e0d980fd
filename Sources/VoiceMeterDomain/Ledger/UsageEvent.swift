/// The idempotency key of a usage frame.
public struct EventKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var callID: String
    public var seq: Int64

    public init(callID: String, seq: Int64) {
        self.callID = callID
        self.seq = seq
    }

    public static func < (lhs: EventKey, rhs: EventKey) -> Bool {
        (lhs.callID, lhs.seq) < (rhs.callID, rhs.seq)
    }

    public var description: String { "\(callID)#\(seq)" }
}

/// One usage frame after pricing, ready to be written to `api_call_events`.
public struct UsageEvent: Sendable, Hashable {
    public var key: EventKey
    /// The call's user and start, fixed per call by the server (they are part of the row's key).
    public var userID: String
    public var callStartedAt: Timestamp
    public var personaID: String?
    public var usage: MeteredUsage
    public var pricing: PricingOutcome
    /// `false` once verified against the provider's bill.
    public var estimated: Bool
    /// The frame's `metadata` object as JSON text, stored as `jsonb`.
    public var metadataJSON: String?
    public var externalID: String?
    /// SHA-256 of the frame's canonical content: tells a harmless resend from a conflicting one.
    public var payloadHash: PayloadHash

    public init(
        key: EventKey, userID: String, callStartedAt: Timestamp, personaID: String? = nil, usage: MeteredUsage,
        pricing: PricingOutcome, estimated: Bool = true, metadataJSON: String? = nil, externalID: String? = nil, payloadHash: PayloadHash
    ) {
        self.key = key
        self.userID = userID
        self.callStartedAt = callStartedAt
        self.personaID = personaID
        self.usage = usage
        self.pricing = pricing
        self.estimated = estimated
        self.metadataJSON = metadataJSON
        self.externalID = externalID
        self.payloadHash = payloadHash
    }
}
