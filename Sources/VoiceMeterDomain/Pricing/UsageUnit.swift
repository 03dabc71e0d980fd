/// A unit usage is reported in and prices are quoted per (protocol v1's list).
public enum UsageUnit: String, Sendable, CaseIterable, Hashable {
    case seconds
    case minutes
    case tokens
    case inputTokens = "input_tokens"
    case cachedInputTokens = "cached_input_tokens"
    case outputTokens = "output_tokens"
    case characters
    case requests
    case transactions

    /// For time units, how many seconds one unit is; `nil` for counted units.
    public var secondsPerUnit: ExactDecimal? {
        switch self {
        case .seconds: ExactDecimal(1)
        case .minutes: ExactDecimal(60)
        case .tokens, .inputTokens, .cachedInputTokens, .outputTokens, .characters, .requests, .transactions: nil
        }
    }

    /// The price units that can price usage reported in this unit, most specific first:
    /// time converts between seconds and minutes; split token counts fall back to a combined
    /// `tokens` price (cached input falls back to the input price first).
    public var priceUnits: [UsageUnit] {
        switch self {
        case .seconds: [.seconds, .minutes]
        case .minutes: [.minutes, .seconds]
        case .inputTokens: [.inputTokens, .tokens]
        case .cachedInputTokens: [.cachedInputTokens, .inputTokens, .tokens]
        case .outputTokens: [.outputTokens, .tokens]
        case .tokens, .characters, .requests, .transactions: [self]
        }
    }

    /// An amount of this unit in base units: seconds for time (exact: minutes × 60), else unchanged.
    func toBase(_ amount: ExactDecimal) throws(DecimalOverflow) -> ExactDecimal {
        guard let seconds = secondsPerUnit else { return amount }
        return try amount.multiplied(by: seconds)
    }
}
