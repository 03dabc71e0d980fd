/// The protocol's limits on what one connection may send, each named with its unit last (the
/// listener's own limits, on sizes, pieces and connections, are `WebSocketLimits`).
public struct IngressLimits: Sendable, Hashable {
    /// Sustained client messages per second per connection (token bucket refill rate).
    public var messagesPerSecondPerConnection = 500
    /// Burst allowance above the sustained rate (token bucket capacity).
    public var messagesBurstPerConnection = 1_000
    /// `rate_limited` errors in a row after which the connection is closed with 1008.
    public var rateLimitedMessagesBeforeCloseMax = 100

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
