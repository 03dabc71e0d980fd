/// What the transport must do after feeding bytes to an `IngressSession`.
public enum IngressAction: Sendable, Hashable {
    /// A complete, valid client message for the metering side.
    case deliver(ClientMessage)
    /// Send this `error` frame; the connection stays open.
    case reply(ProtocolError)
    /// Close the connection with this WebSocket close code and reason (the peer is abusive).
    case close(code: UInt16, reason: String)
}

/// One connection's receive side as a pure state machine: reassembles messages split across
/// receive callbacks (in time linear in the message's size, and in at most `messagePiecesMax`
/// pieces), enforces the size limit and the rate limit, and decodes messages.
///
/// The transport calls `receive` once per receive callback with the chunk, whether it ends the
/// message (`lws_is_final_fragment && lws_remaining_packet_payload == 0`), whether the message is
/// binary, and the monotonic time; it performs the returned actions in order.
public struct IngressSession: Sendable {
    private enum State: Sendable {
        /// Between messages, or collecting the bytes of one in `buffer` (this many pieces so far).
        case collecting(pieces: Int)
        /// The current message passed the size limit: its remaining bytes are dropped.
        case discarding(receivedBytes: Int)
        /// The connection is being closed: nothing more is read.
        case closed
    }

    public static let closeCodePolicyViolation: UInt16 = 1008
    public static let closeCodeMessageTooBig: UInt16 = 1009

    private let limits: IngressLimits
    private var state = State.collecting(pieces: 0)
    /// The message being collected; outside `state` so appending never copies it.
    private var buffer: [UInt8] = []
    private var bucket: TokenBucket
    private var pieceBucket: TokenBucket
    private var oversizedInARow = 0
    private var rateLimitedInARow = 0

    public init(limits: IngressLimits, nowNanoseconds: UInt64) {
        self.limits = limits
        self.bucket = TokenBucket(capacity: limits.messagesBurstPerConnection, refillPerSecond: limits.messagesPerSecondPerConnection,
                                  nowNanoseconds: nowNanoseconds)
        self.pieceBucket = TokenBucket(capacity: limits.messagesBurstPerConnection * limits.piecesPerMessageToken,
                                       refillPerSecond: limits.messagesPerSecondPerConnection * limits.piecesPerMessageToken,
                                       nowNanoseconds: nowNanoseconds)
    }

    public mutating func receive(_ chunk: some Collection<UInt8>, endsMessage: Bool, isBinary: Bool, nowNanoseconds: UInt64) -> [IngressAction] {
        switch state {
        case .collecting(let pieces):
            guard pieces < limits.messagePiecesMax else {
                return close("a message arrived in more than \(limits.messagePiecesMax) pieces")
            }
            // A whole message in one piece is paid for by its message token alone.
            guard endsMessage && pieces == 0 || pieceBucket.take(nowNanoseconds: nowNanoseconds) else {
                return close("more than \(limits.messagesPerSecondPerConnection * limits.piecesPerMessageToken) message pieces a second")
            }
            if buffer.count + chunk.count > limits.messageBytesMax {
                state = .discarding(receivedBytes: buffer.count + chunk.count)
                buffer = []
                return endsMessage ? finishOversized() : []
            }
            buffer.append(contentsOf: chunk)
            guard endsMessage else {
                state = .collecting(pieces: pieces + 1)
                return []
            }
            state = .collecting(pieces: 0)
            oversizedInARow = 0
            // Not keeping the capacity: an idle connection holds no message-sized buffer.
            defer { buffer = [] }
            return complete(buffer, isBinary: isBinary, nowNanoseconds: nowNanoseconds)
        case .discarding(let received):
            state = .discarding(receivedBytes: received + chunk.count)
            return endsMessage ? finishOversized() : []
        case .closed:
            return []
        }
    }

    private mutating func close(_ reason: String) -> [IngressAction] {
        state = .closed
        buffer = []
        return [.close(code: Self.closeCodePolicyViolation, reason: reason)]
    }

    private mutating func finishOversized() -> [IngressAction] {
        guard case .discarding(let received) = state else { preconditionFailure("finishing an oversized message that was not being discarded") }
        state = .collecting(pieces: 0)
        oversizedInARow += 1
        if oversizedInARow >= limits.oversizedMessagesBeforeCloseMax {
            return [.close(code: Self.closeCodeMessageTooBig, reason: "messages keep exceeding \(limits.messageBytesMax) bytes")]
        }
        return [.reply(ProtocolError(.frameTooLarge, "message of \(received) bytes exceeds the limit of \(limits.messageBytesMax) bytes"))]
    }

    private mutating func complete(_ message: [UInt8], isBinary: Bool, nowNanoseconds: UInt64) -> [IngressAction] {
        guard bucket.take(nowNanoseconds: nowNanoseconds) else {
            rateLimitedInARow += 1
            if rateLimitedInARow >= limits.rateLimitedMessagesBeforeCloseMax {
                return [.close(code: Self.closeCodePolicyViolation, reason: "rate limit exceeded persistently")]
            }
            // Decoded only to name the call and seq in the refusal: the sender must keep exactly that
            // frame, and metering must not acknowledge past it until it is sent again and stored.
            let message = try? ClientMessageDecoder.decode(message).get()
            let seq: Int64? = if case .usage(let frame)? = message { frame.seq } else { nil }
            return [.reply(ProtocolError(.rateLimited, "more than \(limits.messagesPerSecondPerConnection) messages per second; this one was dropped unprocessed, send it again later",
                                         callID: message?.callID, seq: seq))]
        }
        rateLimitedInARow = 0
        guard !isBinary else {
            return [.reply(ProtocolError(.invalidJSON, "messages must be UTF-8 JSON text frames, not binary"))]
        }
        switch ClientMessageDecoder.decode(message) {
        case .success(let decoded): return [.deliver(decoded)]
        case .failure(let error): return [.reply(error)]
        }
    }
}
