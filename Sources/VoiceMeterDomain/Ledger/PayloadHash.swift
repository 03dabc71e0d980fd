/// The SHA-256 of a frame's canonical content (`UsageFrame.canonicalContent`): what tells a
/// harmless resend from a conflicting one. Held inline, 32 bytes, no allocation per frame.
public struct PayloadHash: Sendable, Hashable {
    public static let byteCount = 32
    private var word0: UInt64 = 0
    private var word1: UInt64 = 0
    private var word2: UInt64 = 0
    private var word3: UInt64 = 0

    /// The hash whose 32 bytes `fill` writes.
    public init(filling fill: (UnsafeMutableRawBufferPointer) -> Void) {
        withUnsafeMutableBytes(of: &self) { fill($0) }
    }

    /// The hash of these 32 bytes; `nil` for any other count.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Self.byteCount else { return nil }
        self.init { buffer in buffer.copyBytes(from: bytes) }
    }

    /// The 32 bytes, in order.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Gives `body` the 32 bytes, in order, without copying them.
    public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try Swift.withUnsafeBytes(of: self) { try body($0) }
    }
}
