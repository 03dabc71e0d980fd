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

    /// Appends the UTF-8 bytes of `text` (one copy for native strings).
    public mutating func appendUTF8(_ text: String) {
        if text.utf8.withContiguousStorageIfAvailable({ append(contentsOf: $0) }) == nil {
            append(contentsOf: text.utf8)
        }
    }
}
