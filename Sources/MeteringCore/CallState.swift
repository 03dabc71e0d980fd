import VoiceMeterDomain

/// The seqs of a call that are settled: stored, or refused for good (the sender was told not to
/// resend them). The ack is `through`, the end of the unbroken run from 1: it never passes a
/// frame still on its way, refused transiently, or not seen yet.
struct SettledSeqs: Sendable {
    private(set) var through: Int64 = 0
    /// Settled seqs above the run, waiting for the gap below them.
    private var above: Set<Int64> = []

    mutating func settle(_ seq: Int64) {
        if seq == through + 1 {
            through = seq
            while !above.isEmpty, above.remove(through + 1) != nil { through += 1 }
        } else if seq > through {
            above.insert(seq)
        }
    }
}

/// A call being metered. A class, not a struct: a struct read out of the core's table and
/// written back copied all its tables on every access (a third more CPU per frame).
final class LiveCall {
    /// While `call.start` is being registered, the call's later messages wait in order.
    /// `closing`: `call.end` arrived while frames refused transiently were not sent again yet;
    /// their resends are taken, then the call ends. `ending`: its ending is with the ledger.
    enum Phase: Sendable {
        case admitting(queued: [MeteringInput])
        case active
        case closing(endedAt: Timestamp)
        case ending
    }

    struct Cutoff: Sendable {
        var scope: BudgetScope
        var spent: ExactDecimal
        var limit: ExactDecimal
    }

    var start: CallStart
    var phase: Phase
    /// The connection that carries the call; `nil` once it closed.
    var owner: ClientConnection?
    var startedAt: Timestamp
    /// The registration this copy of the call came from (`RegisteredCall.generation`).
    var generation: Int64 = 0
    var meter = CallBillingMeter()
    /// Payload hashes of every frame accepted so far (stored or on its way), by seq.
    var acceptedHashes = AcceptedHashes()
    var settled = SettledSeqs()
    var highestAckedSeq: Int64 = 0
    /// The number of the last commit that stored one of its frames (`MeteringCore.commitNumber`).
    var lastCommit = 0
    /// Frames refused for good, by seq: a resend gets the same answer, never a second look.
    var refusedForGood: [Int64: RejectedFrameReason] = [:]
    /// Frames refused transiently (`overloaded`, `rate_limited`) and not sent again yet.
    var refusedSeqs: Set<Int64> = []
    /// Everything priced for the call, stored or on its way: what its limit is checked against.
    var spent = ExactDecimal.zero
    var budget = BudgetMeter(scope: .call)
    var cutoff: Cutoff?
    /// Whether the burn-rate projection already warned for this call.
    var projectionWarned = false
    /// Frames arrived after the cutoff since it was last sent.
    var streamingAfterCutoff = false
    var lastMessageAt: Timestamp
    /// Its user, once admitted (the same object while the call lives here).
    var user: UserBudget?
    /// The registration of a call whose admission waits (for its reservation in a grant).
    var pendingAdmission: RegisteredCall?
    /// The expected cost reserved for it at admission (grants hold what of it is not spent yet).
    var reservation = ExactDecimal.zero

    init(start: CallStart, phase: Phase, owner: ClientConnection?, startedAt: Timestamp, lastMessageAt: Timestamp) {
        self.start = start
        self.phase = phase
        self.owner = owner
        self.startedAt = startedAt
        self.lastMessageAt = lastMessageAt
    }

    /// The status the call ends with when its sender ends it.
    var endStatus: String { cutoff == nil ? "completed" : "cut_off" }

    /// Keeps a message of a call being admitted, handled in order once it is.
    func queue(_ input: MeteringInput) {
        guard case .admitting(var queued) = phase else { return }
        queued.append(input)
        phase = .admitting(queued: queued)
    }

    var isAdmitting: Bool {
        if case .admitting = phase { true } else { false }
    }
}

/// A user's spend in one budget period (a UTC day or month), as this core knows it: the
/// database's committed figure at the last refresh, plus what this core committed since, plus
/// what it priced that is not stored yet. A frame counts in the period its (bounded) `ts` is in:
/// one stamped in the next period (a client clock ahead of the server's, or a frame at midnight)
/// is carried into that period when the server's clock reaches it; one stamped in an earlier
/// period is not this period's spend.
struct PeriodSpend: Sendable {
    let scope: BudgetScope
    private(set) var start: Timestamp
    private(set) var end: Timestamp
    private var committed: ExactDecimal
    private var committedSinceRefresh = ExactDecimal.zero
    private var inFlight = ExactDecimal.zero
    /// Spend stamped in the next period, stored and not yet.
    private var aheadCommitted = ExactDecimal.zero
    private var aheadInFlight = ExactDecimal.zero
    var meter: BudgetMeter

    init(_ scope: BudgetScope, containing instant: Timestamp, committed: ExactDecimal) {
        self.scope = scope
        (start, end) = Self.bounds(scope, containing: instant)
        self.committed = committed
        meter = BudgetMeter(scope: scope)
    }

    var spent: ExactDecimal { committed + committedSinceRefresh + inFlight }

    func contains(_ instant: Timestamp) -> Bool { start <= instant && instant < end }

    /// The server's clock reached `now`: a period that ended gives way to the one containing it.
    mutating func catchUp(to now: Timestamp) {
        if now >= end { moveOn(to: now, committed: nil) }
    }

    /// A frame stamped `instant` was priced at the server's `now`.
    mutating func charge(_ cost: ExactDecimal, at instant: Timestamp, now: Timestamp) {
        catchUp(to: now)
        if instant < start { return }
        if instant < end { inFlight += cost } else { aheadInFlight += cost }
    }

    /// A priced frame stamped `instant` was stored (`stored`) or not (a conflict, a refusal).
    mutating func settle(_ cost: ExactDecimal, at instant: Timestamp, stored: Bool) {
        if contains(instant) {
            inFlight -= cost
            if stored { committedSinceRefresh += cost }
        } else if instant >= end {
            aheadInFlight -= cost
            if stored { aheadCommitted += cost }
        }
    }

    /// Takes the database's committed spend for the period containing `asOf`.
    mutating func refresh(committed fresh: ExactDecimal, asOf instant: Timestamp) {
        if instant >= end {
            moveOn(to: instant, committed: fresh)
        } else if contains(instant) {
            committed = fresh
            committedSinceRefresh = .zero
        }
    }

    /// The period containing `instant` begins, with the spend stamped ahead into it (the
    /// database's figure, `committed`, includes what of it is stored).
    private mutating func moveOn(to instant: Timestamp, committed fresh: ExactDecimal?) {
        let carried = self
        self = PeriodSpend(scope, containing: instant, committed: fresh ?? .zero)
        guard carried.end == start else { return }  // more than one period passed: nothing was stamped in this one
        inFlight = carried.aheadInFlight
        if fresh == nil { committedSinceRefresh = carried.aheadCommitted }
    }

    private static func bounds(_ scope: BudgetScope, containing instant: Timestamp) -> (Timestamp, Timestamp) {
        switch scope {
        case .day:
            let start = instant.startOfDay
            return (start, start.adding(seconds: 86_400))
        case .month, .call:
            let start = instant.startOfMonth
            return (start, start.adding(seconds: 32 * 86_400).startOfMonth)
        }
    }
}

/// A user with live calls in this core: limits and period spend (a class for the same reason as `LiveCall`).
final class UserBudget {
    let userID: String
    var policy: BudgetPolicy
    var day: PeriodSpend
    var month: PeriodSpend
    /// Admitted calls here.
    var calls: Set<String> = []
    /// What this core holds of the day and month budget, when spend goes through grants.
    var grant: BudgetGrant?
    /// Frames of its calls that found the grant spent, handled again once the request on its way is answered.
    var framesWaitingForGrant: [MeteringInput] = []

    init(_ userID: String, _ snapshot: UserBudgetSnapshot, defaults: BudgetPolicy, asOf instant: Timestamp) {
        self.userID = userID
        policy = snapshot.settings.policy(over: defaults)
        day = PeriodSpend(.day, containing: instant, committed: snapshot.daySpent)
        month = PeriodSpend(.month, containing: instant, committed: snapshot.monthSpent)
    }

    /// The day and month containing `now`.
    func catchUp(to now: Timestamp) {
        day.catchUp(to: now)
        month.catchUp(to: now)
    }

    func spent(in scope: BudgetScope) -> ExactDecimal {
        scope == .day ? day.spent : month.spent
    }
}

/// Running money figures in metering. They cannot leave 38 digits (a frame costs at most
/// `frameCostMaximum`), so these keep the last value rather than trap if that invariant ever broke.
extension ExactDecimal {
    static func + (lhs: ExactDecimal, rhs: ExactDecimal) -> ExactDecimal { (try? lhs.adding(rhs)) ?? lhs }
    static func += (lhs: inout ExactDecimal, rhs: ExactDecimal) { lhs = lhs + rhs }
    static func - (lhs: ExactDecimal, rhs: ExactDecimal) -> ExactDecimal { (try? lhs.subtracting(rhs)) ?? lhs }
    static func -= (lhs: inout ExactDecimal, rhs: ExactDecimal) { lhs = lhs - rhs }
}

/// Whether `spent` has reached `limit` (a zero limit allows nothing: any spend reaches it).
func hasReached(_ spent: ExactDecimal, _ limit: ExactDecimal) -> Bool {
    limit > .zero ? spent >= limit : spent > .zero
}
