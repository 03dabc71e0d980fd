/// Appending text to byte buffers without intermediate `String`s, for the per-frame paths
/// (canonical content, timestamps, COPY rows).
extension Array where Element == UInt8 {
    /// Appends `value` in decimal ASCII (`-` first when negative).
    public mutating func appendDecimal(_ value: Int) {
        if value < 0 { append(UInt8(ascii: "-")) }
        let magnitude = value.magnitude
        var divisor: UInt = 1
        while divisor <= magnitude / 10 { divisor *= 10 }
        repeat {
            append(UInt8(ascii: "0") + UInt8(magnitude / divisor % 10))
            divisor /= 10
        } while divisor > 0
    }

    /// Appends `bytes` in one copy when they are contiguous (arrays, native strings' UTF-8).
    public mutating func appendBytes(of bytes: some Collection<UInt8>) {
        if bytes.withContiguousStorageIfAvailable({ append(contentsOf: $0) }) == nil {
            append(contentsOf: bytes)
        }
    }
}
