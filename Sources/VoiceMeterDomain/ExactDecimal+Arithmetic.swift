/// How an exact result is brought to fewer digits.
public enum RoundingRule: Sendable {
    /// To the nearest; ties to the even digit (banker's rounding). The rule for money in VoiceMeter.
    case halfEven
    /// Towards positive infinity: billing increments ("whole minutes, rounded up").
    case up
    /// Towards negative infinity.
    case down
}

extension ExactDecimal {
    /// `self + other`, exact.
    public func adding(_ other: ExactDecimal) throws(DecimalOverflow) -> ExactDecimal {
        let scale = max(self.scale, other.scale)
        let (sum, overflow) = try significandScaled(to: scale).addingReportingOverflow(other.significandScaled(to: scale))
        guard !overflow else { throw DecimalOverflow() }
        return ExactDecimal(significand: sum, scale: scale)
    }

    /// `self - other`, exact.
    public func subtracting(_ other: ExactDecimal) throws(DecimalOverflow) -> ExactDecimal {
        try adding(other.negated())
    }

    /// `-self`.
    public func negated() throws(DecimalOverflow) -> ExactDecimal {
        guard significand != .min else { throw DecimalOverflow() }
        return ExactDecimal(significand: -significand, scale: scale)
    }

    /// `self × other`, exact (the scales add up; more than `maximumScale` digits are rounded half-even).
    public func multiplied(by other: ExactDecimal) throws(DecimalOverflow) -> ExactDecimal {
        let (product, overflow) = significand.multipliedReportingOverflow(by: other.significand)
        guard !overflow else { throw DecimalOverflow() }
        let scale = self.scale + other.scale
        guard scale > Self.maximumScale else { return ExactDecimal(significand: product, scale: scale) }
        let excess = scale - Self.maximumScale
        return ExactDecimal(significand: Self.divide(product, by: Self.power(excess), .halfEven), scale: Self.maximumScale)
    }

    /// `self ÷ divisor` with `scale` digits after the point, rounded once with `rule`.
    public func divided(by divisor: ExactDecimal, scale: Int, _ rule: RoundingRule) throws(DecimalOverflow) -> ExactDecimal {
        precondition(!divisor.isZero, "division by zero")
        precondition((0...Self.maximumScale).contains(scale))
        // self/divisor × 10^scale = significand × 10^(scale - self.scale + divisor.scale) / divisor.significand
        let exponent = scale - self.scale + divisor.scale
        var numerator = significand
        var denominator = divisor.significand
        if exponent >= 0 {
            numerator = try ExactDecimal(significand: significand, scale: 0).significandScaled(toExponent: exponent)
        } else {
            denominator = try ExactDecimal(significand: divisor.significand, scale: 0).significandScaled(toExponent: -exponent)
        }
        return ExactDecimal(significand: Self.divide(numerator, by: denominator, rule), scale: scale)
    }

    /// The value with exactly `scale` digits after the point, rounding with `rule` when digits are dropped.
    public func rounded(scale newScale: Int, _ rule: RoundingRule) throws(DecimalOverflow) -> ExactDecimal {
        precondition((0...Self.maximumScale).contains(newScale))
        if newScale >= scale { return ExactDecimal(significand: try significandScaled(to: newScale), scale: newScale) }
        return ExactDecimal(significand: Self.divide(significand, by: Self.power(scale - newScale), rule), scale: newScale)
    }

    /// The smallest multiple of `increment` that is at least `self` (for billing increments).
    public func roundedUp(toMultipleOf increment: ExactDecimal) throws(DecimalOverflow) -> ExactDecimal {
        precondition(increment > .zero, "increment must be positive")
        let count = try divided(by: increment, scale: 0, .up)
        return try count.multiplied(by: increment)
    }

    private func significandScaled(toExponent exponent: Int) throws(DecimalOverflow) -> Int128 {
        guard exponent <= 38 else { throw DecimalOverflow() }
        let (value, overflow) = significand.multipliedReportingOverflow(by: Self.power(exponent))
        guard !overflow else { throw DecimalOverflow() }
        return value
    }

    /// Integer division with one rounding step.
    static func divide(_ numerator: Int128, by denominator: Int128, _ rule: RoundingRule) -> Int128 {
        if denominator == 1 { return numerator }
        let (quotient, remainder) = quotientAndRemainder(numerator, denominator)
        guard remainder != 0 else { return quotient }
        let positive = (numerator < 0) == (denominator < 0)
        switch rule {
        case .up:
            return positive ? quotient + 1 : quotient
        case .down:
            return positive ? quotient : quotient - 1
        case .halfEven:
            let twiceRemainder = remainder.magnitude * 2
            let divisorMagnitude = denominator.magnitude
            let awayFromZero = twiceRemainder > divisorMagnitude
                || (twiceRemainder == divisorMagnitude && quotient % 2 != 0)
            guard awayFromZero else { return quotient }
            return positive ? quotient + 1 : quotient - 1
        }
    }
}

/// 128-bit division through 64-bit hardware division when both operands fit (the common case for
/// money), falling back to the 128-bit routine otherwise.
@inline(__always)
private func quotientAndRemainder(_ numerator: Int128, _ denominator: Int128) -> (Int128, Int128) {
    if let small = Int64(exactly: numerator), let divisor = Int64(exactly: denominator), !(small == .min && divisor == -1) {
        let (quotient, remainder) = small.quotientAndRemainder(dividingBy: divisor)
        return (Int128(quotient), Int128(remainder))
    }
    return numerator.quotientAndRemainder(dividingBy: denominator)
}
