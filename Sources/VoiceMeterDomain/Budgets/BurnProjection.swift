/// Beyond the seed: when will a budget run out at the current burn rate?
public enum BurnProjection {
    /// The instant `limit` is reached if spending goes on at the average rate since `since`, or
    /// `nil` when nothing was spent yet, the limit is already reached, or time has not advanced.
    public static func exhaustion(spent: ExactDecimal, limit: ExactDecimal, since: Timestamp, now: Timestamp) -> Timestamp? {
        let elapsed = now.microsecondsSinceEpoch - since.microsecondsSinceEpoch
        guard elapsed > 0, spent > .zero, spent < limit,
              let remaining = try? limit.subtracting(spent),
              // remaining / (spent / elapsed) = remaining × elapsed / spent, in microseconds.
              let micros = try? remaining.multiplied(by: ExactDecimal(Int(elapsed))).divided(by: spent, scale: 0, .down),
              let offset = Int64(exactly: micros.significand)
        else { return nil }
        let (at, overflow) = now.microsecondsSinceEpoch.addingReportingOverflow(offset)
        return overflow ? nil : Timestamp(microsecondsSinceEpoch: at)
    }

    /// Whether the budget runs out before the next check, `horizonSeconds` from now.
    public static func exhaustsWithin(horizonSeconds: Int64, spent: ExactDecimal, limit: ExactDecimal,
                                      since: Timestamp, now: Timestamp) -> Timestamp? {
        guard let at = exhaustion(spent: spent, limit: limit, since: since, now: now),
              at <= now.adding(seconds: horizonSeconds) else { return nil }
        return at
    }
}
