/// Every limit of the streaming ingress in one place, each named with its unit last.
public struct IngressLimits: Sendable, Hashable {
    /// Largest client message; a larger one gets `frame_too_large` (protocol v1: 64 KiB).
    public var messageBytesMax = 64 * 1024
    /// Pieces one message may arrive in (WebSocket fragments, or parts of one read by the
    /// socket); more close the connection with 1008. A 64 KiB message needs 16 pieces of lws's
    /// 4 KiB reads; this bounds the receive callbacks a peer can cost per message.
    public var messagePiecesMax = 1_024
    /// Pieces count against the rate too: a connection may send `piecesPerMessageToken` pieces
    /// for each message token (a 64 KiB message read in 4 KiB parts fits), from a bucket of its own;
    /// a connection past it is closed with 1008.
    public var piecesPerMessageToken = 16
    /// Consecutive oversized messages after which the connection is closed with 1009.
    public var oversizedMessagesBeforeCloseMax = 3
    /// Server messages queued for one connection before it is treated as stuck and closed (1008).
    public var outboxMessagesPerConnectionMax = 4_096
    /// Sustained client messages per second per connection (token bucket refill rate).
    public var messagesPerSecondPerConnection = 500
    /// Burst allowance above the sustained rate (token bucket capacity).
    public var messagesBurstPerConnection = 1_000
    /// `rate_limited` errors in a row after which the connection is closed with 1008.
    public var rateLimitedMessagesBeforeCloseMax = 100
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

/// A token bucket over an injected monotonic clock (nanoseconds), for per-connection rate limits.
public struct TokenBucket: Sendable, Hashable {
    public let capacity: Int
    public let refillPerSecond: Int
    private var tokens: Int
    private var lastRefillNanoseconds: UInt64
    private var fractionalNanoseconds: UInt64 = 0

    public init(capacity: Int, refillPerSecond: Int, nowNanoseconds: UInt64) {
        precondition(capacity > 0 && refillPerSecond > 0)
        self.capacity = capacity
        self.refillPerSecond = refillPerSecond
        self.tokens = capacity
        self.lastRefillNanoseconds = nowNanoseconds
    }

    /// Takes one token if there is one.
    public mutating func take(nowNanoseconds: UInt64) -> Bool {
        refill(nowNanoseconds)
        guard tokens > 0 else { return false }
        tokens -= 1
        return true
    }

    private mutating func refill(_ now: UInt64) {
        guard now > lastRefillNanoseconds else { return }
        let elapsed = now - lastRefillNanoseconds + fractionalNanoseconds
        let nanosecondsPerToken = 1_000_000_000 / UInt64(refillPerSecond)
        let earned = elapsed / nanosecondsPerToken
        fractionalNanoseconds = elapsed % nanosecondsPerToken
        lastRefillNanoseconds = now
        tokens = Int(min(UInt64(capacity), UInt64(tokens) + earned))
        if tokens == capacity { fractionalNanoseconds = 0 }
    }
}
