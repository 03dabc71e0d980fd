/// `call.start`: opens a call; admission is checked here.
public struct CallStart: Sendable, Hashable {
    public var callID: String
    public var userID: String
    public var personaID: String?
    /// When the call started; `nil` when the client did not say (the server uses its receive time).
    public var startedAt: Timestamp?
    public var revenue: ExactDecimal?
    public var currency: String
    public var paymentMethod: String

    public init(callID: String, userID: String, personaID: String? = nil, startedAt: Timestamp? = nil,
                revenue: ExactDecimal? = nil, currency: String = "USD", paymentMethod: String = "card") {
        self.callID = callID
        self.userID = userID
        self.personaID = personaID
        self.startedAt = startedAt
        self.revenue = revenue
        self.currency = currency
        self.paymentMethod = paymentMethod
    }
}

/// `usage`: one metered quantity of one service for one call.
public struct UsageFrame: Sendable, Hashable {
    public var callID: String
    public var seq: Int64
    public var usage: MeteredUsage
    public var externalID: String?
    /// The `metadata` object as compact JSON text.
    public var metadataJSON: String?

    public init(callID: String, seq: Int64, usage: MeteredUsage, externalID: String? = nil, metadataJSON: String? = nil) {
        self.callID = callID
        self.seq = seq
        self.usage = usage
        self.externalID = externalID
        self.metadataJSON = metadataJSON
    }

    /// The frame as a JSON object, for audit records: exactly what a client would send.
    public var auditJSON: String { ClientMessage.usage(self).json }

    /// The frame's content in one canonical byte form, whatever its JSON spelling (member order,
    /// number form, whitespace): hashed to tell a harmless resend from a conflicting one.
    public var canonicalContent: [UInt8] {
        var bytes: [UInt8] = []
        writeCanonicalContent(into: &bytes)
        return bytes
    }

    /// Replaces `bytes` with `canonicalContent`, reusing its capacity (this runs for every frame
    /// the server receives).
    public func writeCanonicalContent(into bytes: inout [UInt8]) {
        bytes.removeAll(keepingCapacity: true)
        bytes.reserveCapacity(192 + (metadataJSON?.utf8.count ?? 0))
        // Each field as its UTF-8 byte count, ':', its bytes.
        func field(_ text: some Collection<UInt8>) {
            bytes.appendDecimal(text.count)
            bytes.append(UInt8(ascii: ":"))
            bytes.appendBytes(of: text)
        }
        // Numbers and the time are written in place, then their count and ':' put in front.
        func written(_ write: (inout [UInt8]) -> Void) {
            let start = bytes.count
            write(&bytes)
            var count = bytes.count - start
            bytes.insert(UInt8(ascii: ":"), at: start)
            repeat {
                bytes.insert(UInt8(ascii: "0") + UInt8(count % 10), at: start)
                count /= 10
            } while count > 0
        }
        field("v1".utf8)
        field(callID.utf8)
        written { $0.appendDecimal(Int(seq)) }
        written { usage.occurredAt.appendRFC3339(to: &$0) }
        field(usage.service.utf8)
        field(usage.operation.utf8)
        field((usage.model ?? "").utf8)
        written { usage.amount.appendDescription(to: &$0) }
        field(usage.unit.rawValue.utf8)
        field((externalID ?? "").utf8)
        field((metadataJSON ?? "").utf8)
    }
}

/// `call.end`: closes a call.
public struct CallEnd: Sendable, Hashable {
    public var callID: String
    /// `nil` when the client did not say (the server uses its receive time).
    public var endedAt: Timestamp?

    public init(callID: String, endedAt: Timestamp?) {
        self.callID = callID
        self.endedAt = endedAt
    }
}

/// A decoded client-to-server message.
public enum ClientMessage: Sendable, Hashable {
    case callStart(CallStart)
    case usage(UsageFrame)
    case callEnd(CallEnd)

    public var callID: String {
        switch self {
        case .callStart(let start): start.callID
        case .usage(let frame): frame.callID
        case .callEnd(let end): end.callID
        }
    }
}
