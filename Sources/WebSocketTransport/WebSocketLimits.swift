/// Every limit of the WebSocket listener, each named with its unit last. The protocol's own
/// limits (messages a second, refusals in a row) belong to the ingress that reads the messages.
public struct WebSocketLimits: Sendable, Hashable {
    /// Largest message; a larger one is dropped unread and reported as `tooLarge` (protocol v1: 64 KiB).
    public var messageBytesMax = 64 * 1024
    /// Pieces one message may arrive in (WebSocket fragments, or parts of one read by the
    /// socket); more close the connection with 1008. A 64 KiB message needs 16 pieces of lws's
    /// 4 KiB reads; this bounds the receive callbacks a peer can cost per message.
    public var messagePiecesMax = 1_024
    /// Pieces of messages that arrive in more than one, per second per connection (token bucket
    /// refill rate); past it the connection is closed with 1008. A message in one piece is not
    /// counted here.
    public var messagePiecesPerSecondPerConnection = 8_000
    /// Burst allowance of pieces above the sustained rate (token bucket capacity).
    public var messagePiecesBurstPerConnection = 16_000
    /// Consecutive oversized messages after which the connection is closed with 1009.
    public var oversizedMessagesBeforeCloseMax = 3
    /// Messages queued for one connection before it is treated as stuck and closed (1008).
    public var outboxMessagesPerConnectionMax = 4_096
    /// Open connections from one peer address (Debian's libwebsockets has no per-IP limit).
    public var connectionsPerPeerMax = 1_024
    /// All open connections.
    public var connectionsMax = 20_000
    /// Seconds without any traffic after which the server pings; no pong within the same time closes it.
    public var idleTimeoutSeconds = 60
    /// Seconds a client has to send its complete HTTP request headers (slow-loris defence).
    public var headerTimeoutSeconds = 10

    public init() {}
}
