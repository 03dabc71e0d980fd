#if !VOICEMETER_FUZZ  // deploy/fuzz.sh compiles this file into VoiceMeterDomain's own sources
import VoiceMeterDomain
#endif

/// One message a connection sent, as the listener assembled it.
public enum InboundMessage: Sendable, Hashable {
    /// A whole message: its bytes, and whether it was sent as binary.
    case message([UInt8], isBinary: Bool)
    /// A message past `WebSocketLimits.messageBytesMax` (`limitBytes`); its bytes were dropped unread.
    case tooLarge(receivedBytes: Int, limitBytes: Int)
}

/// What one receive callback's bytes amount to.
enum AssembledMessage: Sendable, Hashable {
    /// Part of a message: nothing to do yet.
    case incomplete
    /// A message for the delegate: whole, or dropped for its size.
    case ready(InboundMessage)
    /// Close the connection with this WebSocket close code and reason (the peer is abusive).
    case close(code: UInt16, reason: String)
}

/// One connection's receive side as a pure state machine: reassembles messages split across
/// receive callbacks (in time linear in the message's size, and in at most `messagePiecesMax`
/// pieces), bounds the pieces a second and the message size. It knows nothing of what the
/// messages mean.
///
/// The service thread calls `receive` once per receive callback with the chunk, whether it ends
/// the message (`lws_is_final_fragment && lws_remaining_packet_payload == 0`), whether the message
/// is binary, and the monotonic time.
struct MessageAssembler: Sendable {
    private enum State: Sendable {
        /// Between messages, or collecting the bytes of one in `buffer` (this many pieces so far).
        case collecting(pieces: Int)
        /// The current message passed the size limit: its remaining bytes are dropped.
        case discarding(receivedBytes: Int)
        /// The connection is being closed: nothing more is read.
        case closed
    }

    static let closeCodePolicyViolation: UInt16 = 1008
    static let closeCodeMessageTooBig: UInt16 = 1009

    private let limits: WebSocketLimits
    private var state = State.collecting(pieces: 0)
    /// The message being collected; outside `state` so appending never copies it.
    private var buffer: [UInt8] = []
    private var pieceBucket: TokenBucket
    private var oversizedInARow = 0

    init(limits: WebSocketLimits, nowNanoseconds: UInt64) {
        self.limits = limits
        self.pieceBucket = TokenBucket(capacity: limits.messagePiecesBurstPerConnection, refillPerSecond: limits.messagePiecesPerSecondPerConnection,
                                       nowNanoseconds: nowNanoseconds)
    }

    mutating func receive(_ chunk: some Collection<UInt8>, endsMessage: Bool, isBinary: Bool, nowNanoseconds: UInt64) -> AssembledMessage {
        switch state {
        case .collecting(let pieces):
            guard pieces < limits.messagePiecesMax else {
                return close("a message arrived in more than \(limits.messagePiecesMax) pieces")
            }
            // A whole message in one piece costs no piece token.
            guard endsMessage && pieces == 0 || pieceBucket.take(nowNanoseconds: nowNanoseconds) else {
                return close("more than \(limits.messagePiecesPerSecondPerConnection) message pieces a second")
            }
            if buffer.count + chunk.count > limits.messageBytesMax {
                state = .discarding(receivedBytes: buffer.count + chunk.count)
                buffer = []
                return endsMessage ? finishOversized() : .incomplete
            }
            buffer.append(contentsOf: chunk)
            guard endsMessage else {
                state = .collecting(pieces: pieces + 1)
                return .incomplete
            }
            state = .collecting(pieces: 0)
            oversizedInARow = 0
            // Not keeping the capacity: an idle connection holds no message-sized buffer.
            defer { buffer = [] }
            return .ready(.message(buffer, isBinary: isBinary))
        case .discarding(let received):
            state = .discarding(receivedBytes: received + chunk.count)
            return endsMessage ? finishOversized() : .incomplete
        case .closed:
            return .incomplete
        }
    }

    private mutating func close(_ reason: String) -> AssembledMessage {
        state = .closed
        buffer = []
        return .close(code: Self.closeCodePolicyViolation, reason: reason)
    }

    private mutating func finishOversized() -> AssembledMessage {
        guard case .discarding(let received) = state else { preconditionFailure("finishing an oversized message that was not being discarded") }
        state = .collecting(pieces: 0)
        oversizedInARow += 1
        if oversizedInARow >= limits.oversizedMessagesBeforeCloseMax {
            state = .closed
            return .close(code: Self.closeCodeMessageTooBig, reason: "messages keep exceeding \(limits.messageBytesMax) bytes")
        }
        return .ready(.tooLarge(receivedBytes: received, limitBytes: limits.messageBytesMax))
    }
}
