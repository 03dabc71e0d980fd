/// A user's budget row as stored: `nil` columns use the server's defaults.
public struct BudgetSettings: Sendable, Hashable {
    public var callLimit: ExactDecimal?
    public var dayLimit: ExactDecimal?
    public var monthLimit: ExactDecimal?
    public var warnPercent: Int?
    public var autoCutoff: Bool?

    public init(callLimit: ExactDecimal? = nil, dayLimit: ExactDecimal? = nil, monthLimit: ExactDecimal? = nil,
                warnPercent: Int? = nil, autoCutoff: Bool? = nil) {
        self.callLimit = callLimit
        self.dayLimit = dayLimit
        self.monthLimit = monthLimit
        self.warnPercent = warnPercent
        self.autoCutoff = autoCutoff
    }

    /// These settings over `defaults`.
    public func policy(over defaults: BudgetPolicy) -> BudgetPolicy {
        defaults.overridden(callLimit: callLimit, dayLimit: dayLimit, monthLimit: monthLimit, warnPercent: warnPercent, autoCutoff: autoCutoff)
    }
}

/// What the database says of a user's budget right now.
public struct UserBudgetSnapshot: Sendable, Hashable {
    public var settings: BudgetSettings
    /// Committed spend in the UTC day and month containing `at`.
    public var daySpent: ExactDecimal
    public var monthSpent: ExactDecimal
    /// The user's trailing average cost per call, `nil` without history (and from `snapshots`,
    /// which refreshes do not need it for).
    public var averageCallCost: ExactDecimal?

    public init(settings: BudgetSettings, daySpent: ExactDecimal, monthSpent: ExactDecimal, averageCallCost: ExactDecimal? = nil) {
        self.settings = settings
        self.daySpent = daySpent
        self.monthSpent = monthSpent
        self.averageCallCost = averageCallCost
    }
}

/// A budget or usage alert for `cost_alerts` (announced with `NOTIFY cost_alerts` by a trigger).
public struct CostAlert: Sendable, Hashable {
    public var type: String
    public var scope: String?
    public var userID: String?
    public var callID: String?
    public var spent: ExactDecimal?
    public var limit: ExactDecimal?
    public var percent: ExactDecimal?
    public var message: String

    public init(type: String, scope: String?, userID: String?, callID: String?, spent: ExactDecimal?, limit: ExactDecimal?,
                percent: ExactDecimal?, message: String) {
        self.type = type
        self.scope = scope
        self.userID = userID
        self.callID = callID
        self.spent = spent
        self.limit = limit
        self.percent = percent
        self.message = message
    }
}
