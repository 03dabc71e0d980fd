import VoiceMeterDomain

/// What this core holds of one user's day and month budget (a grant in the ledger,
/// `take_budget_grant`) and what of it is used. The core prices the user's frames only while
/// `available` is positive and the lease lasts; a cut-off call's frames are priced regardless
/// (usage after a cutoff is recorded, never dropped: that is the overshoot).
///
/// Kept true: while the lease lasts, the ledger holds at least `inFlight + available` for this
/// core. Pricing moves money from `available` to `inFlight`; a frame stored leaves `inFlight`
/// (the ledger's committed spend has it now); a frame not stored goes back to `available`; a
/// request asks for `keep = inFlight + available` plus an extra, and only an answer adds to
/// `available` (a shrink takes effect when it is asked for).
struct BudgetGrant: Sendable {
    /// What the ledger holds for this core, as of its last answer.
    private(set) var held = ExactDecimal.zero
    /// What this core may still price (negative after a frame that cost more than was left).
    private(set) var available = ExactDecimal.zero
    /// Priced under the grant and not stored (or refused) yet.
    private(set) var inFlight = ExactDecimal.zero
    /// The request on its way: one at a time, so answers apply in order.
    private(set) var pending: GrantRequest?
    /// A top-up is asked for when `available` falls below this (half the target last worked out).
    private(set) var topUpBelow = ExactDecimal.zero
    /// The last answer gave less than was wanted: no more is asked for until this is spent.
    private(set) var roomExhausted = false
    /// The lease as this core counts it: from the sending of its last answered request (the
    /// ledger's lease starts later, when it applies the request).
    private(set) var validUntil = Timestamp(microsecondsSinceEpoch: 0)
    private(set) var renewAfter = Timestamp(microsecondsSinceEpoch: 0)
    /// After a failed request (the database is away), no other before this.
    var retryAfter: Timestamp?
    /// Calls whose reservation waits to be asked for, in order of their registration.
    var waitingAdmissions: [String] = []
    /// The costliest frame priced: a grant covers at least one.
    private(set) var largestFrameCost = ExactDecimal.zero
    /// Everything priced under the grant, and how much of it had been when the last request was
    /// sent: the user's live burn on this core is the difference over the time since.
    private var charged = ExactDecimal.zero
    private var chargedAtRequest = (instant: Timestamp(microsecondsSinceEpoch: 0), charged: ExactDecimal.zero)

    /// What this core holds and keeps in a request: its frames on their way plus what it may still price.
    var kept: ExactDecimal { max(.zero, inFlight + available) }

    /// Whether a frame may be priced now: something is left, or a top-up is on its way while the
    /// last answer gave all that was asked (the frames that arrive within its round trip are
    /// priced on it, never more than it asks for: a burst does not wait for the database).
    func mayPrice(at now: Timestamp) -> Bool {
        guard now < validUntil else { return false }
        if available > .zero { return true }
        guard let pending, pending.purpose == .topUp, !roomExhausted else { return false }
        return available + pending.want > .zero
    }

    /// Whether a frame just priced calls for a request: none on its way, and nothing or little
    /// left, or the lease to renew.
    func needsRequest(at now: Timestamp) -> Bool {
        pending == nil && (available <= .zero || (!roomExhausted && available < topUpBelow) || now >= renewAfter)
    }

    /// The top-up threshold for the target worked out now.
    mutating func plan(topUpBelow threshold: ExactDecimal) {
        topUpBelow = threshold
    }

    mutating func charge(_ cost: ExactDecimal) {
        inFlight += cost
        available -= cost
        charged += cost
        noteFrameCost(cost)
    }

    /// What was priced per second since the last request (over one second at least: a burst is
    /// not a rate), as the user's calls here burn it now.
    func burnPerSecond(at now: Timestamp) -> ExactDecimal {
        let micros = max(1_000_000, now.microsecondsSinceEpoch - chargedAtRequest.instant.microsecondsSinceEpoch)
        return (try? (charged - chargedAtRequest.charged).multiplied(by: ExactDecimal(1_000_000)).divided(by: ExactDecimal(Int(micros)), scale: 10, .up)) ?? .zero
    }

    /// A frame of this cost was priced, or waits: grants cover at least one.
    mutating func noteFrameCost(_ cost: ExactDecimal) {
        if cost > largestFrameCost { largestFrameCost = cost }
    }

    /// A priced frame was stored, or not (a conflict, a refusal): not stored, its cost is
    /// available again. (Never more than is in flight: a frame priced before the user's budget
    /// was held through grants was never counted.)
    mutating func settle(_ cost: ExactDecimal, stored: Bool) {
        let settled = min(cost, inFlight)
        inFlight -= settled
        if !stored { available += settled }
    }

    /// Records the request being sent; keeps at most `available` of what may still be priced
    /// (a shrink applies at once: the ledger may release it as soon as it reads the request).
    mutating func send(_ request: GrantRequest, keepingAvailable: ExactDecimal) {
        if keepingAvailable < available { available = keepingAvailable }
        pending = request
        chargedAtRequest = (request.asOf, charged)
    }

    /// Takes the ledger's answer to the pending request. Returns `false` if it answers another.
    mutating func take(_ answer: GrantAnswer, for request: GrantRequest) -> Bool {
        guard pending?.number == request.number else { return false }
        pending = nil
        retryAfter = nil
        roomExhausted = answer.extra < request.want
        // The extra, or less than what was kept when the lease had run out meanwhile.
        available += answer.held - request.keep
        held = answer.held
        validUntil = request.asOf.adding(seconds: request.leaseSeconds)
        renewAfter = request.asOf.adding(seconds: max(1, request.leaseSeconds / 3))
        return true
    }

    /// The lease renewed with the core's others (`GrantRenewal`): it runs from `asOf`.
    mutating func renew(asOf: Timestamp, leaseSeconds: Int64) {
        validUntil = max(validUntil, asOf.adding(seconds: leaseSeconds))
        renewAfter = max(renewAfter, asOf.adding(seconds: max(1, leaseSeconds / 3)))
    }

    /// The ledger no longer held this grant when its lease was renewed: nothing is priced under
    /// it until a request of its own re-checks what still fits.
    mutating func loseLease(at now: Timestamp) {
        if validUntil > now { validUntil = now }
    }

    /// The pending request failed: whatever it would have given is not used.
    mutating func fail(_ request: GrantRequest, retryAfter instant: Timestamp) -> Bool {
        guard pending?.number == request.number else { return false }
        pending = nil
        retryAfter = instant
        return true
    }

    /// The server stops: nothing more is priced under this grant, nor asked for.
    private(set) var stopped = false

    mutating func stopPricing() {
        if available > .zero { available = .zero }
        stopped = true
    }
}
