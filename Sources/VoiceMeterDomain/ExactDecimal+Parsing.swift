extension ExactDecimal {
    /// Parses decimal text exactly: JSON number syntax (`412`, `-0.5`, `1.5e-7`, `2E3`) or a plain
    /// decimal string (`"0.0059"`). Returns `nil` for anything else, including values that need
    /// more than 38 significant digits or `maximumScale` places. No binary floating point is used.
    public init?(_ text: some StringProtocol) {
        var bytes = Substring(text).utf8[...]
        var negative = false
        if bytes.first == UInt8(ascii: "-") {
            negative = true
            bytes = bytes.dropFirst()
        }
        var significand: Int128 = 0
        var digitCount = 0
        var fractionDigits = 0
        var seenPoint = false
        var exponent = 0

        func appendDigit(_ digit: UInt8) -> Bool {
            let (shifted, overflowA) = significand.multipliedReportingOverflow(by: 10)
            let (sum, overflowB) = shifted.addingReportingOverflow(Int128(digit - UInt8(ascii: "0")))
            significand = sum
            return !overflowA && !overflowB
        }

        while let byte = bytes.first {
            if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                guard appendDigit(byte) else { return nil }
                digitCount += 1
                if seenPoint { fractionDigits += 1 }
            } else if byte == UInt8(ascii: "."), !seenPoint, digitCount > 0 {
                seenPoint = true
            } else {
                break
            }
            bytes = bytes.dropFirst()
        }
        // A digit is required before and after a point ("1." and ".5" are not JSON numbers).
        guard digitCount > 0, !(seenPoint && fractionDigits == 0) else { return nil }

        if let marker = bytes.first, marker == UInt8(ascii: "e") || marker == UInt8(ascii: "E") {
            bytes = bytes.dropFirst()
            var exponentNegative = false
            if let sign = bytes.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") {
                exponentNegative = sign == UInt8(ascii: "-")
                bytes = bytes.dropFirst()
            }
            var exponentDigits = 0
            while let byte = bytes.first, byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                exponent = exponent * 10 + Int(byte - UInt8(ascii: "0"))
                guard exponent <= 1000 else { return nil }
                exponentDigits += 1
                bytes = bytes.dropFirst()
            }
            guard exponentDigits > 0 else { return nil }
            if exponentNegative { exponent = -exponent }
        }
        guard bytes.isEmpty else { return nil }

        var scale = fractionDigits - exponent
        if scale < 0 {
            guard -scale <= 38 else { return nil }
            let (scaled, overflow) = significand.multipliedReportingOverflow(by: Self.power(-scale))
            guard !overflow else { return nil }
            significand = scaled
            scale = 0
        }
        // Trailing zeros beyond the maximum scale carry no value; anything else is too precise.
        while scale > Self.maximumScale, significand % 10 == 0 {
            significand /= 10
            scale -= 1
        }
        guard scale <= Self.maximumScale else { return nil }
        self.init(significand: negative ? -significand : significand, scale: scale)
    }
}
