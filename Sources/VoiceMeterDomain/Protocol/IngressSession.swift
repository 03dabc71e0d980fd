/// What to do with one whole message a connection sent.
public enum IngressAction: Sendable, Hashable {
    /// A complete, valid client message for the metering side.
    case deliver(ClientMessage)
    /// Send this `error` frame; the connection stays open.
    case reply(ProtocolError)
    /// Close the connection with this WebSocket close code and reason (the peer is abusive).
    case close(code: UInt16, reason: String)
}

/// One connection's protocol side as a pure state machine: enforces the message rate and decodes
/// each whole message the transport assembled.
public struct IngressSession: Sendable {
    public static let closeCodePolicyViolation: UInt16 = 1008

    private let limits: IngressLimits
    private var bucket: TokenBucket
    private var rateLimitedInARow = 0

    public init(limits: IngressLimits, nowNanoseconds: UInt64) {
        self.limits = limits
        self.bucket = TokenBucket(capacity: limits.messagesBurstPerConnection, refillPerSecond: limits.messagesPerSecondPerConnection,
                                  nowNanoseconds: nowNanoseconds)
    }

    /// A whole message as it arrived: its bytes, and whether it was sent as binary.
    public mutating func receive(_ message: [UInt8], isBinary: Bool, nowNanoseconds: UInt64) -> IngressAction {
        guard bucket.take(nowNanoseconds: nowNanoseconds) else {
            rateLimitedInARow += 1
            if rateLimitedInARow >= limits.rateLimitedMessagesBeforeCloseMax {
                return .close(code: Self.closeCodePolicyViolation, reason: "rate limit exceeded persistently")
            }
            // Decoded only to name the call and seq in the refusal: the sender must keep exactly that
            // frame, and metering must not acknowledge past it until it is sent again and stored.
            let message = try? ClientMessageDecoder.decode(message).get()
            let seq: Int64? = if case .usage(let frame)? = message { frame.seq } else { nil }
            return .reply(ProtocolError(.rateLimited, "more than \(limits.messagesPerSecondPerConnection) messages per second; this one was dropped unprocessed, send it again later",
                                        callID: message?.callID, seq: seq))
        }
        rateLimitedInARow = 0
        guard !isBinary else {
            return .reply(ProtocolError(.invalidJSON, "messages must be UTF-8 JSON text frames, not binary"))
        }
        switch ClientMessageDecoder.decode(message) {
        case .success(let decoded): return .deliver(decoded)
        case .failure(let error): return .reply(error)
        }
    }

    /// A message past the transport's size limit, dropped unread.
    public static func tooLarge(receivedBytes: Int, limitBytes: Int) -> ProtocolError {
        ProtocolError(.frameTooLarge, "message of \(receivedBytes) bytes exceeds the limit of \(limitBytes) bytes")
    }
}
