/// An exact base-10 number: `significand × 10^-scale`, for money and usage amounts.
///
/// Parsing, addition, subtraction and multiplication are exact. Division and rescaling round only
/// when asked, with an explicit `RoundingRule`. Arithmetic that would leave the 128-bit range
/// throws `DecimalOverflow` instead of wrapping or trapping: a server must not crash on a large
/// input. Binary floating point is never involved.
public struct ExactDecimal: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The digits, as an integer.
    public let significand: Int128
    /// How many of those digits are after the decimal point (0 to `maximumScale`).
    public let scale: Int

    /// The most digits after the point any value may carry.
    public static let maximumScale = 30

    public static let zero = ExactDecimal(significand: 0, scale: 0)

    /// `significand × 10^-scale`; `scale` must be within 0 … `maximumScale`.
    public init(significand: Int128, scale: Int) {
        precondition((0...Self.maximumScale).contains(scale), "ExactDecimal scale \(scale) out of range")
        self.significand = significand
        self.scale = scale
    }

    /// A whole number.
    public init(_ integer: Int) {
        self.init(significand: Int128(integer), scale: 0)
    }

    public var isNegative: Bool { significand < 0 }
    public var isZero: Bool { significand == 0 }

    // MARK: Comparison and hashing (by value: 1.50 == 1.5)

    public static func == (lhs: ExactDecimal, rhs: ExactDecimal) -> Bool {
        compare(lhs, rhs) == 0
    }

    public static func < (lhs: ExactDecimal, rhs: ExactDecimal) -> Bool {
        compare(lhs, rhs) < 0
    }

    public func hash(into hasher: inout Hasher) {
        let normal = normalized
        hasher.combine(normal.significand)
        hasher.combine(normal.scale)
    }

    private static func compare(_ lhs: ExactDecimal, _ rhs: ExactDecimal) -> Int {
        if lhs.scale == rhs.scale {
            return lhs.significand < rhs.significand ? -1 : (lhs.significand > rhs.significand ? 1 : 0)
        }
        if lhs.isNegative != rhs.isNegative { return lhs.isNegative ? -1 : 1 }
        let scale = max(lhs.scale, rhs.scale)
        // Aligning can only overflow for magnitudes far apart; compare integral parts first then.
        if let left = try? lhs.significandScaled(to: scale), let right = try? rhs.significandScaled(to: scale) {
            return left < right ? -1 : (left > right ? 1 : 0)
        }
        let leftWhole = lhs.significand / power(lhs.scale)
        let rightWhole = rhs.significand / power(rhs.scale)
        return leftWhole < rightWhole ? -1 : (leftWhole > rightWhole ? 1 : 0)
    }

    /// The same value with trailing zero digits removed (`1.500` → `1.5`).
    public var normalized: ExactDecimal {
        var scale = scale
        // Through 64-bit division when the digits fit (every amount and cost of a frame): the
        // 128-bit routine is a library call per digit.
        if var digits = Int64(exactly: significand) {
            while scale > 0, digits % 10 == 0 {
                digits /= 10
                scale -= 1
            }
            return ExactDecimal(significand: Int128(digits), scale: scale)
        }
        var digits = significand
        while scale > 0, digits % 10 == 0 {
            digits /= 10
            scale -= 1
        }
        return ExactDecimal(significand: digits, scale: scale)
    }

    // MARK: Text

    /// The shortest exact decimal text: `0.4045`, `-3`, `0.0000001`.
    public var description: String { normalized.plainText }

    /// Exactly `scale` digits after the point, rounding with `rule` if needed: `formatted(scale: 2)` → `"4.12"`.
    public func formatted(scale: Int, rule: RoundingRule = .halfEven) -> String {
        ((try? rounded(scale: scale, rule)) ?? self).plainText
    }

    private var plainText: String {
        var text: [UInt8] = []
        appendPlainText(to: &text)
        return String(decoding: text, as: UTF8.self)
    }

    /// Appends `description` as ASCII to `text`, without making a `String` (the ledger writes
    /// four per event).
    public func appendDescription(to text: inout [UInt8]) {
        normalized.appendPlainText(to: &text)
    }

    /// The digits with the point `scale` digits from the right (`0.` and zeros in front when needed).
    private func appendPlainText(to text: inout [UInt8]) {
        if isNegative { text.append(UInt8(ascii: "-")) }
        // At most 39 digits; written right to left, through 64-bit division when they fit.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 40) { digits in
            var start = digits.count
            func push(_ digit: some BinaryInteger) {
                start -= 1
                digits[start] = UInt8(ascii: "0") + UInt8(digit)
            }
            var wide = significand.magnitude
            while wide > UInt128(UInt64.max) {
                push(wide % 10)
                wide /= 10
            }
            var narrow = UInt64(wide)
            repeat {
                push(narrow % 10)
                narrow /= 10
            } while narrow > 0
            let count = digits.count - start
            if scale >= count {
                text.append(UInt8(ascii: "0"))
                text.append(UInt8(ascii: "."))
                text.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: scale - count))
                text.append(contentsOf: digits[start...])
            } else {
                let point = digits.count - scale
                text.append(contentsOf: digits[start..<point])
                if scale > 0 {
                    text.append(UInt8(ascii: "."))
                    text.append(contentsOf: digits[point...])
                }
            }
        }
    }

    // MARK: Scaling helpers

    static func power(_ exponent: Int) -> Int128 {
        powersOfTen[exponent]
    }

    private static let powersOfTen: [Int128] = {
        var values: [Int128] = [1]
        for _ in 1...38 { values.append(values.last! * 10) }
        return values
    }()

    /// The significand expressed at a larger or equal scale.
    func significandScaled(to newScale: Int) throws(DecimalOverflow) -> Int128 {
        precondition(newScale >= scale)
        let factor = newScale - scale
        if factor == 0 { return significand }
        guard factor <= 38 else { throw DecimalOverflow() }
        let (value, overflow) = significand.multipliedReportingOverflow(by: Self.power(factor))
        guard !overflow else { throw DecimalOverflow() }
        return value
    }
}

/// A result did not fit in 128 bits (about 38 significant digits).
public struct DecimalOverflow: Error, Equatable, CustomStringConvertible {
    public init() {}
    public var description: String { "decimal arithmetic overflowed 38 significant digits" }
}
