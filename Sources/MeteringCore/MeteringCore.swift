import VoiceMeterDomain

/// Metering's limits and timings (the server's settings).
public struct MeteringSettings: Sendable {
    /// Limits for users without a settings row (seed 002: $10 per call, $100 per month).
    public var defaults: BudgetPolicy
    /// What a call is expected to cost at admission when the user has no history (seed 002: $0.90).
    public var defaultCallCostEstimate: ExactDecimal
    /// How often committed spend is refreshed and cutoffs re-sent (seed 002: every 30 s).
    public var tickSeconds: Int
    /// A call with no message for this long is closed as abandoned.
    public var abandonAfterSeconds: Int64
    /// How far before the server's clock a new call's `call.start` `ts` may lie, in seconds.
    public var callStartPastSeconds: Int64
    /// How far the client's clock may run ahead of the server's, in seconds: a `call.start` or
    /// frame `ts` after the server's clock plus this, or a frame `ts` before its call's start
    /// minus this, is refused `invalid_timestamp`.
    public var clockSkewSeconds: Int64
    /// Whether this core evaluates the platform's quotas on its tick (one core of the server does).
    public var evaluatesPlatformQuotas: Bool
    /// Live calls one connection may carry (started or resumed on it); another `call.start` on it
    /// is answered `call.rejected` `connection_call_limit`.
    public var liveCallsPerConnectionMax: Int
    /// Frames for unknown calls whose audit row (`rejected_frames`) one connection may cause per
    /// second; beyond, they are still answered `unknown_call`, and counted instead of recorded.
    public var unknownCallRecordsPerConnectionPerSecond: Int
    /// Seconds of a user's burn a budget grant covers (topped up when half of it is left).
    public var grantSeconds: Int
    /// How long the ledger keeps a grant its core stopped renewing (a node that died), in seconds.
    public var grantLeaseSeconds: Int64

    public init(defaults: BudgetPolicy, defaultCallCostEstimate: ExactDecimal, tickSeconds: Int, abandonAfterSeconds: Int64,
                callStartPastSeconds: Int64 = 900, clockSkewSeconds: Int64 = 60, evaluatesPlatformQuotas: Bool = true,
                callsPerConnectionMax: Int = 1_000, unknownCallRecordsPerSecond: Int = 10, grantSeconds: Int = 5, grantLeaseSeconds: Int64 = 60) {
        self.defaults = defaults
        self.defaultCallCostEstimate = defaultCallCostEstimate
        self.tickSeconds = tickSeconds
        self.abandonAfterSeconds = abandonAfterSeconds
        self.callStartPastSeconds = callStartPastSeconds
        self.clockSkewSeconds = clockSkewSeconds
        self.evaluatesPlatformQuotas = evaluatesPlatformQuotas
        liveCallsPerConnectionMax = callsPerConnectionMax
        unknownCallRecordsPerConnectionPerSecond = unknownCallRecordsPerSecond
        self.grantSeconds = grantSeconds
        self.grantLeaseSeconds = grantLeaseSeconds
    }

    /// No single frame may cost more (a unit mistake, not usage); the ledger's columns hold far more.
    public static let frameCostMaximum = ExactDecimal(1_000_000)
}

/// Every decision metering makes, with no I/O, no clock and no threads: admission at
/// `call.start`, pricing, dedup and budget checks on every frame, warnings and cutoffs,
/// acknowledgements after commit, call ends and summaries, and the tick. Driven as
/// `handle(input) -> [action]`; the shard performs the actions, the simulation fakes them.
///
/// The rules it keeps (docs/protocol.md):
/// - an ack for seq n means every seq ≤ n of the call is stored or was refused for good with an
///   error naming it; a frame refused transiently is never covered until it is sent again and stored;
/// - a call ends only when all its seqs are settled, and an ended call stays ended;
/// - limits are live: a changed limit re-evaluates warnings and cutoffs of the user's live calls,
///   and a cutoff is part of the call wherever it resumes;
/// - the client's clock is bounded by the server's, and budget periods and prices follow a
///   frame's (bounded) `ts`;
/// - only a copy of a call that still has its connection ends it unconditionally.
///
/// Its calls and users are objects (for speed: see `LiveCall`): a core has one owner, its
/// executor, and is not copied.
public struct MeteringCore {
    public let settings: MeteringSettings
    var calls: [String: LiveCall] = [:]
    var users: [String: UserBudget] = [:]
    /// The frame whose `submit` awaits its `submitted` answer.
    var staged: StagedFrame?
    /// Counts commits: marks the calls a commit touched.
    var commitNumber = 0
    /// Numbers grant requests (`GrantRequest.number`).
    var grantNumber = 0
    /// Leases to renew together (`GrantRenewal`): one renewal on its way at a time.
    var grantRenewal = GrantRenewals()
    /// Messages that waited for their call's admission or their user's grant, handled in order,
    /// one submit at a time.
    var backlog: [MeteringInput] = []
    /// Per connection: the second of its latest unknown-call frame, and how many were recorded in it.
    var unknownCallRecords: [ClientConnection: (second: Int64, recorded: Int)] = [:]
    /// The instant and prices of the input being handled.
    var now = Timestamp(microsecondsSinceEpoch: 0)
    var prices = PriceBook.empty

    struct StagedFrame {
        var call: LiveCall
        var seq: Int64
        var occurredAt: Timestamp
        var hash: PayloadHash
        var quote: CallBillingMeter.Quote
        var connection: ClientConnection
        var closing: Bool
    }

    public init(settings: MeteringSettings) {
        self.settings = settings
    }

    /// Handles `input` at `now` with `prices` in force, appending what to do to `actions` (kept
    /// by the caller so its capacity is reused from frame to frame).
    public mutating func handle(_ input: MeteringInput, at now: Timestamp, prices: PriceBook, into actions: inout [MeteringAction]) {
        begin(at: now, prices: prices)
        precondition(staged == nil || { if case .submitted = input { true } else { false } }(),
                     "a submit action is answered with submitted(accepted:) before any other input")
        handle(input, into: &actions)
        handleBacklog(into: &actions)
        renewDueGrants(&actions)
    }

    /// Takes the instant and the prices of the input being handled (the book only when it changed).
    private mutating func begin(at now: Timestamp, prices: PriceBook) {
        self.now = now
        if !prices.isIdentical(to: self.prices) { self.prices = prices }
    }

    /// Handles the messages that waited for an admission, until one submits (its answer resumes them).
    private mutating func handleBacklog(into actions: inout [MeteringAction]) {
        while staged == nil, !backlog.isEmpty { handle(backlog.removeFirst(), into: &actions) }
    }

    /// `handle(.usage(frame, hash:, from:))` without building the input or the `frameHandled`
    /// action (the executor's per-frame path): returns `false` when the frame waits for its call's
    /// admission (a `frameHandled` action follows when it is handled), `true` when it is done.
    public mutating func handleUsage(_ frame: UsageFrame, hash: PayloadHash, from connection: ClientConnection, at now: Timestamp, prices: PriceBook,
                                     into actions: inout [MeteringAction]) -> Bool {
        begin(at: now, prices: prices)
        precondition(staged == nil, "a submit action is answered with submitted(accepted:) before any other input")
        let done = usage(frame, hash, connection, &actions)
        handleBacklog(into: &actions)
        renewDueGrants(&actions)
        return done
    }

    /// The writer's answer to the `submit` action just performed: `handle(.submitted(accepted:))`
    /// at the same instant and prices as the input that submitted (the executor's per-frame path).
    public mutating func answerSubmit(accepted: Bool, into actions: inout [MeteringAction]) {
        handle(.submitted(accepted: accepted), into: &actions)
        handleBacklog(into: &actions)
    }

    /// Handles `input` at `now` with `prices` in force and returns what to do.
    public mutating func handle(_ input: MeteringInput, at now: Timestamp, prices: PriceBook) -> [MeteringAction] {
        var actions: [MeteringAction] = []
        handle(input, at: now, prices: prices, into: &actions)
        return actions
    }

    /// Live calls (for gauges and tests).
    public var liveCallCount: Int { calls.count }

    private mutating func handle(_ input: MeteringInput, into actions: inout [MeteringAction]) {
        switch input {
        case .callStart(let start, let connection): callStarted(start, connection, &actions)
        case .usage(let frame, let hash, let connection):
            if usage(frame, hash, connection, &actions) { actions.append(.frameHandled(callID: frame.callID)) }
        case .callEnd(let end, let connection): callEnded(end, connection, input, &actions)
        case .submitted(let accepted): submitted(accepted, &actions)
        case .refusedTransiently(let callID, let seq, let connection):
            guard let index = calls.index(forKey: callID), calls.values[index].owner == connection else { return }
            if calls.values[index].acceptedHashes[seq] == nil, calls.values[index].refusedForGood[seq] == nil, seq > calls.values[index].settled.through {
                calls.values[index].refusedSeqs.insert(seq)
            }
        case .refusedAtDecoding(let error, let connection): refusedAtDecoding(error, connection, &actions)
        case .connectionClosed(let connection): connectionClosed(connection, &actions)
        case .registered(let callID, let registration, let snapshot, let asOf): registered(callID, registration, snapshot, asOf: asOf, &actions)
        case .registrationFailed(let callID, let reason): registrationFailed(callID, reason, &actions)
        case .committed(let commit): committed(commit, &actions)
        case .refusedByLedger(let event, let reason): refusedByLedger(event, reason, &actions)
        case .budgetsRefreshed(let snapshots, let asOf): budgetsRefreshed(snapshots, asOf: asOf, &actions)
        case .budgetSettingsChanged:
            guard !users.isEmpty else { return }
            actions.append(.refreshBudgets(userIDs: users.keys.sorted(), asOf: now, paced: false))
        case .grantAnswered(let request, let answer): grantAnswered(request, answer, &actions)
        case .grantFailed(let request, let reason): grantFailed(request, reason, &actions)
        case .grantsRenewed(let renewal, let renewed): grantsRenewed(renewal, renewed, &actions)
        case .grantRenewalFailed(let renewal, _): grantRenewal.failed(renewal, retryAfter: now.adding(seconds: Self.grantRetrySeconds))
        case .releaseGrants: releaseGrants(&actions)
        case .tick: tick(&actions)
        }
    }
}
