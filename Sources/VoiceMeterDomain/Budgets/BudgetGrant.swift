/// A request to the ledger (`take_budget_grant`) to set what one metering core holds of a user's
/// day and month budget: `keep` plus an extra of at most `want`, at least `minimum` or nothing.
/// The ledger gives an extra only while committed spend plus every holder's grant stays within
/// the user's limits, so N cores (on N nodes) never spend N budgets.
public struct GrantRequest: Sendable, Hashable {
    public var userID: String
    /// Numbers a core's requests: an answer is taken only by the request it answers.
    public var number: Int
    /// What the core holds and keeps: its frames on their way to the ledger plus what it may still price.
    public var keep: ExactDecimal
    public var want: ExactDecimal
    public var minimum: ExactDecimal
    /// The server's limits for users without settings of their own (`nil`: no such limit).
    public var defaultDayLimit: ExactDecimal?
    public var defaultMonthLimit: ExactDecimal?
    /// Committed spend is counted in the UTC day and month containing this instant.
    public var asOf: Timestamp
    /// How long the ledger keeps the grant if the core does not write it again (it died).
    public var leaseSeconds: Int64
    /// Why the core asks (a call's admission, a top-up, a renewal, a return).
    public var purpose: GrantPurpose

    public init(userID: String, number: Int, keep: ExactDecimal, want: ExactDecimal, minimum: ExactDecimal, defaultDayLimit: ExactDecimal?,
                defaultMonthLimit: ExactDecimal?, asOf: Timestamp, leaseSeconds: Int64, purpose: GrantPurpose) {
        self.userID = userID
        self.number = number
        self.keep = keep
        self.want = want
        self.minimum = minimum
        self.defaultDayLimit = defaultDayLimit
        self.defaultMonthLimit = defaultMonthLimit
        self.asOf = asOf
        self.leaseSeconds = leaseSeconds
        self.purpose = purpose
    }
}

/// The leases of a core's grants renewed together, in one statement whatever the number of users:
/// only grants whose lease still runs are extended (amounts do not change, so nothing else is read).
public struct GrantRenewal: Sendable, Hashable {
    /// Numbers a core's renewals: an answer is taken only by the renewal it answers.
    public var number: Int
    public var userIDs: [String]
    /// The leases run from this instant (the core's clock when it asked).
    public var asOf: Timestamp
    public var leaseSeconds: Int64

    public init(number: Int, userIDs: [String], asOf: Timestamp, leaseSeconds: Int64) {
        self.number = number
        self.userIDs = userIDs
        self.asOf = asOf
        self.leaseSeconds = leaseSeconds
    }
}

/// Why a grant is asked for.
public enum GrantPurpose: Sendable, Hashable {
    /// A new call's expected cost, reserved all or nothing before it is admitted.
    case admission(callID: String)
    /// More for the user's live calls (a few seconds of their burn).
    case topUp
    /// The lease renewed with the rest of the core's (`GrantRenewal`) did not hold; or what is
    /// not needed any more given back.
    case renewal
    /// Everything not on its way given back (the user's calls ended, or the server stops).
    case release
}

/// The ledger's answer to a `GrantRequest`.
public struct GrantAnswer: Sendable, Hashable {
    /// What the core holds now (`keep` plus `extra`, or less when its lease had run out).
    public var held: ExactDecimal
    public var extra: ExactDecimal
    /// Committed spend of the day and month, and what other cores hold.
    public var daySpent: ExactDecimal
    public var monthSpent: ExactDecimal
    public var othersHeld: ExactDecimal
    /// The limit that had too little room when less than `want` was given.
    public var shortScope: BudgetScope?
    /// Grants of the user whose lease had run out, removed by this request.
    public var expired: Int

    public init(held: ExactDecimal, extra: ExactDecimal, daySpent: ExactDecimal, monthSpent: ExactDecimal, othersHeld: ExactDecimal,
                shortScope: BudgetScope?, expired: Int) {
        self.held = held
        self.extra = extra
        self.daySpent = daySpent
        self.monthSpent = monthSpent
        self.othersHeld = othersHeld
        self.shortScope = shortScope
        self.expired = expired
    }

    /// What is gone from the budget of `scope` as the ledger saw it: committed, or held by a core.
    public func used(in scope: BudgetScope) -> ExactDecimal {
        let committed = scope == .day ? daySpent : monthSpent
        return (try? committed.adding(othersHeld).adding(held)) ?? committed
    }
}
