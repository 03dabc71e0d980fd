/// A user's limits (seed 002 section 6.1, plus a daily limit), with the server's defaults filled in.
public struct BudgetPolicy: Sendable, Hashable {
    /// Most one call may cost; `nil` = no per-call limit.
    public var callLimit: ExactDecimal?
    public var dayLimit: ExactDecimal?
    public var monthLimit: ExactDecimal?
    /// Percentages of the per-call limit that warn (default 75 and 90).
    public var callWarningPercents: [Int]
    /// Percentages of the day and month limits that warn (default 80 and 95).
    public var periodWarningPercents: [Int]
    /// Whether reaching a limit cuts the call off (`budget.cutoff`), or only warns.
    public var autoCutoff: Bool

    public init(callLimit: ExactDecimal?, dayLimit: ExactDecimal?, monthLimit: ExactDecimal?,
                callWarningPercents: [Int] = [75, 90], periodWarningPercents: [Int] = [80, 95], autoCutoff: Bool = true) {
        self.callLimit = callLimit
        self.dayLimit = dayLimit
        self.monthLimit = monthLimit
        self.callWarningPercents = callWarningPercents.sorted()
        self.periodWarningPercents = periodWarningPercents.sorted()
        self.autoCutoff = autoCutoff
    }

    /// A settings row over the server's defaults: a `nil` column keeps the default. A custom call
    /// warning percent replaces the first threshold (the 90% one stays above it).
    public func overridden(callLimit: ExactDecimal?, dayLimit: ExactDecimal?, monthLimit: ExactDecimal?,
                           warnPercent: Int?, autoCutoff: Bool?) -> BudgetPolicy {
        var policy = self
        policy.callLimit = callLimit ?? self.callLimit
        policy.dayLimit = dayLimit ?? self.dayLimit
        policy.monthLimit = monthLimit ?? self.monthLimit
        if let warnPercent { policy.callWarningPercents = [warnPercent] + self.callWarningPercents.dropFirst().filter { $0 > warnPercent } }
        policy.autoCutoff = autoCutoff ?? self.autoCutoff
        return policy
    }

    /// Seed 002 section 6.1: $10 per call, $100 per month, no daily limit, auto-cutoff on.
    public static let seedDefaults = BudgetPolicy(callLimit: ExactDecimal(10), dayLimit: nil, monthLimit: ExactDecimal(100))

    public func limit(for scope: BudgetScope) -> ExactDecimal? {
        switch scope {
        case .call: callLimit
        case .day: dayLimit
        case .month: monthLimit
        }
    }

    public func warningPercents(for scope: BudgetScope) -> [Int] {
        scope == .call ? callWarningPercents : periodWarningPercents
    }
}

/// Why a call is refused at `call.start` (protocol reasons).
public enum AdmissionRefusal: String, Sendable, Hashable {
    case dayBudgetExhausted = "day_budget_exhausted"
    case monthBudgetExhausted = "month_budget_exhausted"
}

/// Seed 002's `canUserMakeCall`: refuse when the remaining day or month budget is below what a
/// call is expected to cost.
public enum Admission {
    public static func check(policy: BudgetPolicy, daySpent: ExactDecimal, monthSpent: ExactDecimal,
                             estimatedCallCost: ExactDecimal) -> (refusal: AdmissionRefusal, spent: ExactDecimal, limit: ExactDecimal)? {
        for (scope, spent) in [(BudgetScope.day, daySpent), (.month, monthSpent)] {
            guard let limit = policy.limit(for: scope) else { continue }
            let remaining = (try? limit.subtracting(spent)) ?? .zero
            if remaining < estimatedCallCost {
                return (scope == .day ? .dayBudgetExhausted : .monthBudgetExhausted, spent, limit)
            }
        }
        return nil
    }
}

/// What a budget check found for one scope.
public enum BudgetSignal: Sendable, Hashable {
    /// `spent` crossed `percent` of `limit` for the first time.
    case warning(scope: BudgetScope, spent: ExactDecimal, limit: ExactDecimal, percent: ExactDecimal, threshold: Int)
    /// `spent` reached `limit`.
    case limitReached(scope: BudgetScope, spent: ExactDecimal, limit: ExactDecimal)
}

/// Threshold bookkeeping for one scope of one budget: each warning fires once, the limit once,
/// per limit: a changed limit starts the meter over, so a raised limit fires again when it is
/// reached. Equal when scope and what has fired are equal (the cached quiet bar is not compared).
public struct BudgetMeter: Sendable, Hashable {
    public let scope: BudgetScope
    public private(set) var warned: Set<Int> = []
    public private(set) var limitReached = false
    /// The limit the fired thresholds belong to.
    private var firedFor: ExactDecimal?
    /// The spend below which nothing new can be crossed, and the limit and warning percents it
    /// was worked out for: most frames are checked with one comparison.
    private var quiet: (limit: ExactDecimal, percents: [Int], below: ExactDecimal)?

    public init(scope: BudgetScope) {
        self.scope = scope
    }

    /// The new signals for `spent` under `policy` (none when nothing new was crossed).
    public mutating func check(spent: ExactDecimal, policy: BudgetPolicy) -> [BudgetSignal] {
        guard let limit = policy.limit(for: scope) else { return [] }
        if firedFor != limit {
            warned = []
            limitReached = false
            firedFor = limit
            quiet = nil
        }
        // A zero limit allows nothing: any spend reaches it.
        guard limit > .zero else {
            guard spent > .zero, !limitReached else { return [] }
            limitReached = true
            return [.limitReached(scope: scope, spent: spent, limit: limit)]
        }
        let percents = policy.warningPercents(for: scope)
        let below: ExactDecimal
        if let quiet, quiet.limit == limit, quiet.percents == percents {
            below = quiet.below
        } else {
            below = quietBelow(limit: limit, percents: percents)
            quiet = (limit, percents, below)
        }
        if spent < below { return [] }
        quiet = nil
        var signals: [BudgetSignal] = []
        let percent = (try? spent.multiplied(by: ExactDecimal(100)).divided(by: limit, scale: 1, .down)) ?? .zero
        for threshold in percents where !warned.contains(threshold) && percent >= ExactDecimal(threshold) {
            warned.insert(threshold)
            // Crossing several thresholds at once reports only the highest.
            signals.removeAll()
            signals.append(.warning(scope: scope, spent: spent, limit: limit, percent: percent, threshold: threshold))
        }
        if spent >= limit, !limitReached {
            limitReached = true
            signals.append(.limitReached(scope: scope, spent: spent, limit: limit))
        }
        return signals
    }

    /// Below the limit and the lowest warning not yet given (`limit × percent / 100`, exact), or
    /// zero when that bar is not representable (every check of a positive spend then takes the
    /// full path).
    private func quietBelow(limit: ExactDecimal, percents: [Int]) -> ExactDecimal {
        guard let next = percents.lazy.filter({ !warned.contains($0) }).min() else { return limit }
        let (scaled, overflow) = limit.significand.multipliedReportingOverflow(by: Int128(next))
        guard !overflow, limit.scale + 2 <= ExactDecimal.maximumScale else { return .zero }
        return min(limit, ExactDecimal(significand: scaled, scale: limit.scale + 2))
    }

    public static func == (lhs: BudgetMeter, rhs: BudgetMeter) -> Bool {
        lhs.scope == rhs.scope && lhs.warned == rhs.warned && lhs.limitReached == rhs.limitReached
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(scope)
        hasher.combine(warned)
        hasher.combine(limitReached)
    }
}
