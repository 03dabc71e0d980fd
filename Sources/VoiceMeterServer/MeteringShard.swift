import Foundation
import Synchronization
import Logging
import VoiceMeterCrypto
import VoiceMeterDomain
import VoiceMeterStore
import WebSocketTransport

/// Where metering sends messages and which services it uses; implemented by the composition root.
protocol MeteringEnvironment: Sendable {
    var prices: PriceBookWatcher { get }
    var writers: LedgerWriters { get }
    var registry: CallRegistry { get }
    var router: CallRouter { get }
    var budgets: BudgetConfiguration { get }
    /// Metering's time and tick timer (injected so tests control time).
    var clock: any MeteringClock { get }
    var metrics: ServerMetrics { get }
    func send(_ message: ServerMessage, to connection: ConnectionID)
}

/// The server's budget defaults and timings.
struct BudgetConfiguration: Sendable {
    /// Limits for users without a settings row (seed 002: $10 per call, $100 per month).
    var defaults: BudgetPolicy
    /// What a call is expected to cost at admission when the user has no history (seed 002: $0.90).
    var defaultCallCostEstimate: ExactDecimal
    /// How often committed spend is refreshed and cutoffs re-sent (seed 002: every 30 s).
    var tickSeconds: Int
    /// A call with no message for this long is closed as abandoned.
    var abandonAfterSeconds: Int64
}

/// The live ledger of the calls of the users it owns, on its own Dispatch queue: admission at
/// `call.start`, pricing and budget checks on every frame, warnings and cutoff, acknowledgements
/// after commit, `call.summary` after `call.end`, and a tick that refreshes committed spend (so
/// several server processes see each other's spend), re-sends cutoffs and closes abandoned calls.
actor MeteringShard {
    /// A class, not a struct: its tables grow with the call, and a struct copied out of `calls`,
    /// changed and written back would copy them on every frame.
    private final class LiveCall {
        /// While `call.start` is being registered, later messages of the call wait in order.
        /// `closing`: `call.end` arrived while frames refused transiently (`rate_limited`,
        /// `overloaded`) were not sent again yet; their resends are taken, then the call ends.
        enum Phase { case admitting(queued: [(ClientMessage, ConnectionID)]), active, closing(endedAt: Timestamp), ending }
        var start: CallStart
        var phase: Phase
        var owner: ConnectionID?
        var startedAt = Timestamp(microsecondsSinceEpoch: 0)
        var meter = CallBillingMeter()
        /// Payload hashes of every frame accepted so far (committed or in flight), by seq.
        var acceptedHashes = AcceptedHashes()
        /// Committed cost per service.
        var costByService: [String: ExactDecimal] = [:]
        var highestAckedSeq: Int64 = 0
        /// Accepted frames not yet committed: an ack never covers one of them.
        var inFlight: Set<Int64> = []
        /// Frames refused transiently (`overloaded`, `rate_limited`) and not yet sent again: an
        /// ack never covers one of them either, so the sender keeps them and resends.
        var refusedSeqs: Set<Int64> = []
        var highestCommittedSeq: Int64 = 0
        /// Everything priced for the call, committed or in flight: what its budget is checked against.
        var spent = ExactDecimal.zero
        var budget = BudgetMeter(scope: .call)
        var cutoff: (scope: BudgetScope, spent: ExactDecimal, limit: ExactDecimal)?
        /// Whether the burn-rate projection already warned for this call.
        var projectionWarned = false
        /// Frames arrived after the cutoff since it was last sent.
        var streamingAfterCutoff = false
        var lastMessageAt: Timestamp
        /// The ledger writer that commits the call's events (always the same one).
        let writer: LedgerWriter

        /// The status the call ends with when its sender ends it.
        var endStatus: String { cutoff == nil ? "completed" : "cut_off" }

        init(start: CallStart, phase: Phase, owner: ConnectionID?, lastMessageAt: Timestamp, writer: LedgerWriter) {
            self.start = start
            self.writer = writer
            self.phase = phase
            self.owner = owner
            self.lastMessageAt = lastMessageAt
        }
    }

    /// A user's spend as this shard knows it: the database's committed figure at the last refresh,
    /// plus what this shard committed since, plus what it priced that is not committed yet.
    /// A class for the same reason as `LiveCall` (its set of calls).
    private final class UserBudget {
        var policy: BudgetPolicy
        var dayStart: Timestamp
        var monthStart: Timestamp
        var dayCommitted: ExactDecimal
        var monthCommitted: ExactDecimal
        var committedSinceRefresh = ExactDecimal.zero
        var inFlight = ExactDecimal.zero
        var pricedSinceRefresh: ExactDecimal { committedSinceRefresh + inFlight }
        var day = BudgetMeter(scope: .day)
        var month = BudgetMeter(scope: .month)
        var calls: Set<String> = []

        var daySpent: ExactDecimal { dayCommitted + pricedSinceRefresh }
        var monthSpent: ExactDecimal { monthCommitted + pricedSinceRefresh }

        init(_ snapshot: UserBudgetSnapshot, defaults: BudgetPolicy, now: Timestamp) {
            policy = snapshot.settings.policy(over: defaults)
            dayStart = now.startOfDay
            monthStart = now.startOfMonth
            dayCommitted = snapshot.daySpent
            monthCommitted = snapshot.monthSpent
        }

        /// Takes the database's settings and committed spend as of `now`; a new day or month
        /// starts its meter over.
        func refresh(from snapshot: UserBudgetSnapshot, defaults: BudgetPolicy, now: Timestamp) {
            if now.startOfDay != dayStart { day = BudgetMeter(scope: .day); dayStart = now.startOfDay }
            if now.startOfMonth != monthStart { month = BudgetMeter(scope: .month); monthStart = now.startOfMonth }
            policy = snapshot.settings.policy(over: defaults)
            dayCommitted = snapshot.daySpent
            monthCommitted = snapshot.monthSpent
            committedSinceRefresh = .zero
        }
    }

    /// No single frame may cost more (a unit mistake, not usage); the ledger's columns hold far more.
    static let frameCostMaximum = ExactDecimal(1_000_000)

    private let index: Int
    private let executor: DispatchSerialExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    private let environment: any MeteringEnvironment
    private let logger: Logger
    private var calls: [String: LiveCall] = [:]
    private var users: [String: UserBudget] = [:]
    /// The tick's timer, until the server stops. Its handler holds the shard strongly: a weak
    /// reference would move the shard's reference count to a side table and make every retain
    /// of it (several per frame) slower.
    private var tickTimer: (any MeteringTimer)?
    /// The canonical content of the frame being handled (its capacity kept from frame to frame).
    private var canonicalContent: [UInt8] = []

    init(index: Int, environment: any MeteringEnvironment, logger: Logger) {
        self.index = index
        self.executor = DispatchSerialExecutor(label: "voicemeter.metering.\(index)")
        self.environment = environment
        self.logger = logger
    }

    typealias Work = @Sendable (isolated MeteringShard) -> Void

    /// Work handed in by other threads, run in order by one queue block per burst (a block per
    /// frame cost a Dispatch hop, and often a thread wake, for every frame).
    private struct Inbox: ~Copyable {
        var work: [Work] = []
        var drainScheduled = false
    }

    private let inbox = Mutex(Inbox())
    /// The drained array, kept for its capacity.
    private var draining: [Work] = []

    /// Runs `body` on the shard's queue without creating a task (called from other threads), in
    /// the order of the calls.
    nonisolated func perform(_ body: @escaping Work) {
        let schedule = inbox.withLock { inbox in
            inbox.work.append(body)
            guard !inbox.drainScheduled else { return false }
            inbox.drainScheduled = true
            return true
        }
        if schedule { executor.queue.async { self.assumeIsolated { $0.drainInbox() } } }
    }

    /// Runs what the inbox holds; if more arrived meanwhile, runs it in a later block so timers
    /// and other blocks on the queue take their turn.
    private func drainInbox() {
        var batch: [Work] = []
        swap(&batch, &draining)
        let hasWork = inbox.withLock { inbox in
            swap(&inbox.work, &batch)
            if batch.isEmpty { inbox.drainScheduled = false }
            return !batch.isEmpty
        }
        guard hasWork else { return }
        for work in batch { work(self) }
        batch.removeAll(keepingCapacity: true)
        draining = batch
        let again = inbox.withLock { inbox in
            if inbox.work.isEmpty { inbox.drainScheduled = false }
            return inbox.drainScheduled
        }
        if again { executor.queue.async { self.assumeIsolated { $0.drainInbox() } } }
    }

    /// Returns once everything `perform` was given before this call has run.
    nonisolated func barrier() {
        let done = DispatchSemaphore(value: 0)
        perform { _ in done.signal() }
        done.wait()
    }

    /// Starts the budget tick: every `tickSeconds` of the clock, on the shard's own queue.
    nonisolated func startTicking() {
        perform { shard in
            shard.tickTimer = shard.environment.clock.repeating(every: shard.environment.budgets.tickSeconds, on: shard.executor.queue) {
                shard.assumeIsolated { $0.tick() }
            }
        }
    }

    /// Stops the tick (the server is stopping), releasing the timer's hold on the shard.
    nonisolated func stopTicking() {
        perform { shard in
            shard.tickTimer?.cancel()
            shard.tickTimer = nil
        }
    }

    // MARK: Client messages

    /// Handles a client message; `writer` is the call's ledger writer, which counted the frame in.
    func handle(_ message: ClientMessage, from connection: ConnectionID, writer: LedgerWriter) {
        let call = calls[message.callID]
        if let call, case .admitting(var queued) = call.phase {
            if case .callStart = message {} else {
                queued.append((message, connection))
                call.phase = .admitting(queued: queued)
                return
            }
        }
        defer { if case .usage = message { writer.noteHandled() } }
        call?.lastMessageAt = environment.clock.now
        switch message {
        case .callStart(let start): callStarted(start, connection)
        case .usage(let frame): usage(frame, connection, call)
        case .callEnd(let end): callEnded(end, connection)
        }
    }

    func connectionClosed(_ connection: ConnectionID) {
        for call in calls.values where call.owner == connection { call.owner = nil }
    }

    private func callStarted(_ start: CallStart, _ connection: ConnectionID) {
        if let existing = calls[start.callID] {
            guard existing.start.userID == start.userID else {
                environment.send(.callRejected(callID: start.callID, reason: "duplicate_call", spent: nil, limit: nil), to: connection)
                return
            }
            // The call left this node (its connection closed) with nothing in flight: it may have
            // continued on another node since, so this node's copy may be stale. Forget it and
            // resume from the database like any other node would.
            if existing.owner == nil, case .active = existing.phase, existing.inFlight.isEmpty {
                calls[start.callID] = nil
                users[existing.start.userID]?.calls.remove(start.callID)
            } else {
                // A reconnect resumes the call on the new connection: no second admission.
                existing.owner = connection
                switch existing.phase {
                case .active, .closing: accept(start.callID)
                case .admitting, .ending: break
                }
                return
            }
        }
        let now = environment.clock.now
        calls[start.callID] = LiveCall(start: start, phase: .admitting(queued: []), owner: connection, lastMessageAt: now,
                                       writer: environment.writers.writer(for: start.callID))
        environment.router.pin(start.callID, to: index)
        environment.registry.register(start, startedAt: start.startedAt ?? now, at: now) { [self] outcome in
            self.perform { shard in shard.registered(start.callID, outcome) }
        }
    }

    private func registered(_ callID: String, _ outcome: Result<(CallRegistration, UserBudgetSnapshot), any Error>) {
        guard let call = calls[callID], case .admitting(let queued) = call.phase else { return }
        /// Answers the start and the frames that waited for it: `frameError` for those, by default
        /// transient (send call.start, then the frame again).
        func refuse(_ message: ServerMessage, frameError: (ProtocolErrorCode, String) = (.overloaded, "call.start did not go through, so this frame was not taken; send call.start, then the frame again")) {
            calls[callID] = nil
            environment.router.forget(callID)
            if let owner = call.owner { environment.send(message, to: owner) }
            for case (.usage(let frame), let connection) in queued {
                call.writer.noteHandled()
                environment.send(.error(ProtocolError(frameError.0, frameError.1, callID: callID, seq: frame.seq)), to: connection)
            }
        }
        switch outcome {
        case .failure(let error):
            logger.warning("call registration failed", metadata: metadata(call).merging(["error": "\(error)"]) { $1 })
            refuse(.error(ProtocolError(.overloaded, "the database is unavailable; send call.start again shortly", callID: callID)))
        case .success((.belongsToAnotherUser, _)):
            refuse(.callRejected(callID: callID, reason: "duplicate_call", spent: nil, limit: nil))
        case .success((.ended, _)):
            refuse(.callRejected(callID: callID, reason: "call_ended", spent: nil, limit: nil),
                   frameError: (.unknownCall, "the call has ended; usage for it is not taken"))
        case .success((.registered(let registered), let snapshot)):
            let userID = call.start.userID
            let user = users[userID] ?? UserBudget(snapshot, defaults: environment.budgets.defaults, now: environment.clock.now)
            if registered.isNew, let refusal = Admission.check(
                policy: user.policy, daySpent: user.daySpent, monthSpent: user.monthSpent,
                estimatedCallCost: snapshot.averageCallCost ?? environment.budgets.defaultCallCostEstimate
            ) {
                environment.registry.markCall(userID: userID, callID: callID, status: "rejected", cutoffReason: nil)
                logger.info("call refused", metadata: metadata(call).merging(["reason": "\(refusal.refusal.rawValue)"]) { $1 })
                refuse(.callRejected(callID: callID, reason: refusal.refusal.rawValue, spent: refusal.spent, limit: refusal.limit))
                return
            }
            call.startedAt = registered.startedAt
            call.phase = .active
            replay(registered.committedEvents, into: call)
            logger.debug(registered.isNew ? "call admitted" : "call resumed", metadata: metadata(call))
            user.calls.insert(callID)
            users[userID] = user
            accept(callID)
            for (message, connection) in queued { handle(message, from: connection, writer: call.writer) }
        }
    }

    /// The log metadata that identifies a call: `call.id`, `user.id` and the `conn.id` carrying it.
    private func metadata(_ call: LiveCall) -> Logger.Metadata {
        ["call.id": "\(call.start.callID)", "user.id": "\(call.start.userID)", "conn.id": "\(call.owner.map { "\($0.rawValue)" } ?? "none")"]
    }

    /// Rebuilds a resumed call's billing state, resend detection and spend from its committed events.
    private func replay(_ events: [CommittedEvent], into call: LiveCall) {
        let book = environment.prices.book
        // The resumed ack covers the unbroken run of stored seqs from 1 only: a seq missing below
        // the highest stored one may have been taken by the node that died and never stored, and
        // the sender must keep it. It resends everything above this ack in order, so that seq is
        // in flight before any new commit of the call could move the ack past it.
        for committed in events {
            let seq = committed.stored.seq
            if seq == call.highestAckedSeq + 1 { call.highestAckedSeq = seq }
            call.acceptedHashes[seq] = committed.payloadHash
            call.highestCommittedSeq = max(call.highestCommittedSeq, seq)
            if let priceID = committed.stored.priceID, let version = book.version(id: priceID) {
                _ = call.meter.price(committed.stored.usage, with: version)
            }
            if let cost = committed.totalCost {
                call.costByService[committed.stored.usage.service, default: .zero] += cost
                call.spent += cost
            }
        }
    }

    private func accept(_ callID: String) {
        guard let call = calls[callID], let owner = call.owner, let user = users[call.start.userID] else { return }
        environment.send(.callAccepted(callID: callID, callLimit: user.policy.callLimit ?? .zero, monthSpent: user.monthSpent,
                                       monthLimit: user.policy.monthLimit ?? .zero), to: owner)
        if call.highestAckedSeq > 0 { environment.send(.ack(callID: callID, seq: call.highestAckedSeq), to: owner) }
        if let cutoff = call.cutoff {
            environment.send(.budgetCutoff(callID: callID, scope: cutoff.scope, spent: cutoff.spent, limit: cutoff.limit), to: owner)
        }
    }

    private func usage(_ frame: UsageFrame, _ connection: ConnectionID, _ call: LiveCall?) {
        guard let call else {
            environment.send(.error(ProtocolError(.unknownCall, "no call.start was seen for this call_id on this server; send call.start first",
                                                  callID: frame.callID, seq: frame.seq)), to: connection)
            environment.registry.recordRejected(callID: frame.callID, seq: frame.seq, reason: "unknown_call", payloadJSON: frame.auditJSON)
            return
        }
        // After call.end only the frames it waits for are taken, and resends of frames already taken.
        let closing: Bool
        switch call.phase {
        case .admitting, .active: closing = false
        case .closing where call.refusedSeqs.contains(frame.seq) || call.acceptedHashes[frame.seq] != nil: closing = true
        case .closing, .ending:
            environment.send(.error(ProtocolError(.unknownCall, "the call has ended (call.end was received); usage after it is not taken",
                                                  callID: frame.callID, seq: frame.seq)), to: connection)
            return
        }
        call.owner = connection
        frame.writeCanonicalContent(into: &canonicalContent)
        let hash = PayloadHash(sha256Of: canonicalContent)
        if let seen = call.acceptedHashes[frame.seq] {
            if seen != hash {
                environment.send(.error(ProtocolError(.seqConflict, "seq \(frame.seq) was already used for different content",
                                                      callID: frame.callID, seq: frame.seq)), to: connection)
            } else if frame.seq <= call.highestAckedSeq {
                environment.send(.ack(callID: frame.callID, seq: call.highestAckedSeq), to: connection)
            }
            return
        }
        let quote = call.meter.quote(frame.usage, book: environment.prices.book)
        let pricing = quote.outcome
        if case .priced(let priced) = pricing, priced.totalCost > Self.frameCostMaximum {
            environment.send(.error(ProtocolError(.invalidAmount, "this frame would cost \(priced.totalCost) USD, above the \(Self.frameCostMaximum) USD a frame may cost; check amount and unit",
                                                  callID: frame.callID, seq: frame.seq)), to: connection)
            // Refused for good: if it was refused transiently before, nothing waits for it any more.
            if call.refusedSeqs.remove(frame.seq) != nil {
                acknowledge(call)
                if closing { endIfSettled(call) }
            }
            return
        }
        let event = UsageEvent(
            key: EventKey(callID: frame.callID, seq: frame.seq), userID: call.start.userID, callStartedAt: call.startedAt,
            personaID: call.start.personaID, usage: frame.usage, pricing: pricing,
            metadataJSON: frame.metadataJSON, externalID: frame.externalID, payloadHash: hash
        )
        guard call.writer.submit(event) else {
            call.refusedSeqs.insert(frame.seq)
            environment.send(.error(ProtocolError(.overloaded, "the ledger is behind; this frame was not taken, send it again shortly",
                                                  callID: frame.callID, seq: frame.seq)), to: connection)
            return
        }
        call.meter.advance(with: quote)
        call.acceptedHashes[frame.seq] = hash
        call.inFlight.insert(frame.seq)
        call.refusedSeqs.remove(frame.seq)
        if call.cutoff != nil { call.streamingAfterCutoff = true }
        if closing { endIfSettled(call) }
        switch pricing {
        case .priced(let priced): charge(priced.totalCost, to: call)
        case .unpriced: environment.metrics.unpricedEvents.increment()
        }
    }

    /// Adds a frame's cost to its call and user and acts on every budget it crosses.
    private func charge(_ cost: ExactDecimal, to call: LiveCall) {
        guard let user = users[call.start.userID] else { return }
        let callID = call.start.callID
        call.spent += cost
        user.inFlight += cost
        let policy = user.policy
        let callSignals = call.budget.check(spent: call.spent, policy: policy)
        let daySignals = user.day.check(spent: user.daySpent, policy: policy)
        let monthSignals = user.month.check(spent: user.monthSpent, policy: policy)
        // Nearly every frame crosses nothing: no signal arrays joined.
        guard !callSignals.isEmpty || !daySignals.isEmpty || !monthSignals.isEmpty else { return }
        for signal in callSignals + daySignals + monthSignals { act(on: signal, userID: call.start.userID, callID: callID) }
    }

    private func act(on signal: BudgetSignal, userID: String, callID: String) {
        guard let user = users[userID] else { return }
        switch signal {
        case .warning(let scope, let spent, let limit, let percent, _):
            if let owner = calls[callID]?.owner {
                environment.send(.budgetWarning(callID: callID, scope: scope, spent: spent, limit: limit, percent: percent), to: owner)
            }
            environment.registry.record(CostAlert(type: "budget_warning", scope: scope.rawValue, userID: userID, callID: callID, spent: spent,
                                                  limit: limit, percent: percent, message: "\(scope.rawValue) budget at \(percent)% (\(spent) of \(limit) USD)"))
        case .limitReached(let scope, let spent, let limit):
            guard user.policy.autoCutoff else {
                environment.registry.record(CostAlert(type: "budget_warning", scope: scope.rawValue, userID: userID, callID: callID, spent: spent,
                                                      limit: limit, percent: nil, message: "\(scope.rawValue) limit of \(limit) USD reached; auto-cutoff is off"))
                return
            }
            environment.registry.record(CostAlert(type: "budget_cutoff", scope: scope.rawValue, userID: userID, callID: callID, spent: spent,
                                                  limit: limit, percent: nil, message: "\(scope.rawValue) limit of \(limit) USD reached: calls cut off"))
            let affected = scope == .call ? [callID] : Array(user.calls)
            for id in affected { cutOff(id, scope: scope, spent: spent, limit: limit) }
        }
    }

    private func cutOff(_ callID: String, scope: BudgetScope, spent: ExactDecimal, limit: ExactDecimal) {
        guard let call = calls[callID], call.cutoff == nil else { return }
        call.cutoff = (scope, spent, limit)
        environment.metrics.budgetCutoffs.increment()
        logger.info("call cut off", metadata: metadata(call).merging(["scope": "\(scope.rawValue)", "spent": "\(spent)", "limit": "\(limit)"]) { $1 })
        if let owner = call.owner { environment.send(.budgetCutoff(callID: callID, scope: scope, spent: spent, limit: limit), to: owner) }
        environment.registry.markCall(userID: call.start.userID, callID: callID, status: "cut_off", cutoffReason: "\(scope.rawValue)_limit")
    }

    private func callEnded(_ end: CallEnd, _ connection: ConnectionID) {
        guard let call = calls[end.callID] else {
            environment.send(.error(ProtocolError(.unknownCall, "no active call with this call_id on this server", callID: end.callID)), to: connection)
            return
        }
        switch call.phase {
        case .active:
            call.owner = connection
            // Frames refused transiently are still the sender's to resend: the call ends once they are taken.
            call.phase = .closing(endedAt: end.endedAt ?? environment.clock.now)
            endIfSettled(call)
        case .closing, .ending:
            call.owner = connection  // a repeated call.end: the summary goes to the latest sender
        case .admitting:
            preconditionFailure("call.end of a call being admitted is queued, not handled")
        }
    }

    /// A frame of the call refused before metering saw it (`rate_limited`): until it is sent again
    /// and stored, no ack covers it and the call does not end without it.
    func refusedTransiently(callID: String, seq: Int64) {
        guard let call = calls[callID], call.acceptedHashes[seq] == nil else { return }
        call.refusedSeqs.insert(seq)
    }

    /// Ends a closing call once no frame refused transiently is still expected.
    private func endIfSettled(_ call: LiveCall) {
        guard case .closing(let endedAt) = call.phase, call.refusedSeqs.isEmpty else { return }
        finish(call.start.callID, call: call, endedAt: endedAt, status: call.endStatus)
    }

    private func finish(_ callID: String, call: LiveCall, endedAt: Timestamp, status: String) {
        call.phase = .ending
        call.writer.submit(CallEnding(userID: call.start.userID, callID: callID, endedAt: endedAt, status: status))
    }

    // MARK: The tick

    /// Every `tickSeconds`: refresh users' committed spend (other processes' calls included) and
    /// settings, re-send cutoffs to calls still streaming, close abandoned calls, project burn
    /// rates, evaluate platform quotas.
    func tick() {
        let now = environment.clock.now
        for (callID, call) in calls where call.streamingAfterCutoff {
            call.streamingAfterCutoff = false
            if let owner = call.owner, let cutoff = call.cutoff {
                environment.send(.budgetCutoff(callID: callID, scope: cutoff.scope, spent: cutoff.spent, limit: cutoff.limit), to: owner)
            }
        }
        for (callID, call) in calls where now.microsecondsSinceEpoch - call.lastMessageAt.microsecondsSinceEpoch
                >= environment.budgets.abandonAfterSeconds * 1_000_000 {
            switch call.phase {
            case .active: finish(callID, call: call, endedAt: call.lastMessageAt, status: "abandoned")
            // The refused frames never came back: the call ends with what was stored.
            case .closing(let endedAt): finish(callID, call: call, endedAt: endedAt, status: call.endStatus)
            case .admitting, .ending: break
            }
        }
        warnOfProjectedExhaustion(at: now)
        // Platform quotas are one set for the whole platform: the first shard evaluates them.
        if index == 0 { environment.registry.evaluateQuotas(at: now) }
        refreshUsers(paced: true)
    }

    /// Beyond the seed: a call whose per-call limit will be exhausted before the next tick at its
    /// current burn rate is warned once, with the projected time.
    private func warnOfProjectedExhaustion(at now: Timestamp) {
        for (callID, call) in calls where call.cutoff == nil && !call.projectionWarned {
            guard case .active = call.phase, let user = users[call.start.userID], let limit = user.policy.callLimit,
                  let at = BurnProjection.exhaustsWithin(horizonSeconds: Int64(environment.budgets.tickSeconds), spent: call.spent,
                                                         limit: limit, since: call.startedAt, now: now)
            else { continue }
            call.projectionWarned = true
            environment.registry.record(CostAlert(type: "projected_exhaustion", scope: "call", userID: call.start.userID, callID: callID,
                                                  spent: call.spent, limit: limit, percent: nil,
                                                  message: "at its burn rate the call reaches its \(limit) USD limit at \(at)"))
        }
    }

    /// Users whose spend one query reloads. A tick spreads a larger refresh over its first
    /// seconds, a chunk a second (over half the tick at most): one query for 5,000 users was
    /// ~300 ms of a core at once, which showed in the acknowledgement tail of 10,000 live calls.
    static let refreshChunkUsers = 500

    /// Reloads the settings and committed spend of the users with live calls (on the tick, paced;
    /// within a second of a `user_budget_settings` change, all at once).
    func refreshUsers(paced: Bool = false) {
        let userIDs = Array(users.keys)
        let starts = Array(stride(from: 0, to: userIDs.count, by: Self.refreshChunkUsers))
        let spacingMilliseconds = min(1_000, environment.budgets.tickSeconds * 1_000 / 2 / max(starts.count, 1))
        for (position, start) in starts.enumerated() {
            let chunk = Array(userIDs[start..<min(start + Self.refreshChunkUsers, userIDs.count)])
            if paced && position > 0 {
                executor.queue.asyncAfter(deadline: .now() + .milliseconds(position * spacingMilliseconds)) {
                    // Not after the server stopped ticking.
                    self.perform { shard in if shard.tickTimer != nil { shard.refresh(chunk) } }
                }
            } else {
                refresh(chunk)
            }
        }
    }

    private func refresh(_ userIDs: [String]) {
        let now = environment.clock.now
        environment.registry.refresh(userIDs, at: now) { [self] outcome in
            self.perform { shard in shard.refreshed(outcome, at: now) }
        }
    }

    private func refreshed(_ outcome: Result<[String: UserBudgetSnapshot], any Error>, at now: Timestamp) {
        guard case .success(let fresh) = outcome else { return }  // keep metering from memory until the database is back
        for (userID, snapshot) in fresh {
            guard let user = users[userID] else { continue }
            user.refresh(from: snapshot, defaults: environment.budgets.defaults, now: now)
            let signals = user.day.check(spent: user.daySpent, policy: user.policy) + user.month.check(spent: user.monthSpent, policy: user.policy)
            // New settings may put a running call over its own limit too.
            for callID in user.calls.sorted() {
                guard let call = calls[callID] else { continue }
                let callSignals = call.budget.check(spent: call.spent, policy: user.policy)
                for signal in callSignals { act(on: signal, userID: userID, callID: callID) }
            }
            guard let anyCall = user.calls.sorted().first else { continue }
            for signal in signals { act(on: signal, userID: userID, callID: anyCall) }
        }
    }

    // MARK: Commits

    func committed(_ batch: CommittedBatch) {
        // The calls to acknowledge, each once (by identity: no call id hashed per event).
        var touched: [ObjectIdentifier: LiveCall] = [:]
        let anyConflict = !batch.result.conflicts.isEmpty
        for event in batch.events {
            let key = event.key
            let cost: ExactDecimal? = if case .priced(let priced) = event.pricing { priced.totalCost } else { nil }
            let conflicted = anyConflict && batch.result.conflicts.contains(key)
            if let cost, let user = users[event.userID] {
                user.inFlight -= cost
                if !conflicted {
                    user.committedSinceRefresh += cost
                }
            }
            guard let call = calls[key.callID] else { continue }
            call.inFlight.remove(key.seq)
            if conflicted {
                call.acceptedHashes[key.seq] = nil
                if let owner = call.owner {
                    environment.send(.error(ProtocolError(.seqConflict, "seq \(key.seq) is stored with different content",
                                                          callID: key.callID, seq: key.seq)), to: owner)
                }
                continue
            }
            // Inserted now, or already stored by this very submission (a commit whose reply was lost
            // and was retried): resends never reach the writer, they are answered from memory.
            if let cost {
                call.costByService[event.usage.service, default: .zero] += cost
            }
            call.highestCommittedSeq = max(call.highestCommittedSeq, key.seq)
            touched[ObjectIdentifier(call)] = call
        }
        for call in touched.values { acknowledge(call) }
        for ending in batch.endings { summarize(ending.callID) }
    }

    /// Sends the cumulative ack: the highest committed seq below every frame still in flight or
    /// refused as `overloaded`.
    private func acknowledge(_ call: LiveCall) {
        var ack = call.highestCommittedSeq
        if let lowestInFlight = call.inFlight.min() { ack = min(ack, lowestInFlight - 1) }
        if let lowestRefused = call.refusedSeqs.min() { ack = min(ack, lowestRefused - 1) }
        guard ack > call.highestAckedSeq else { return }
        call.highestAckedSeq = ack
        if let owner = call.owner { environment.send(.ack(callID: call.start.callID, seq: ack), to: owner) }
    }

    /// The database refused an event outright (a data error): tell the sender, forget the frame.
    func refused(_ event: UsageEvent, reason: String) {
        if case .priced(let priced) = event.pricing, let user = users[event.userID] {
            user.inFlight -= priced.totalCost
        }
        guard let call = calls[event.key.callID] else { return }
        call.inFlight.remove(event.key.seq)
        call.acceptedHashes[event.key.seq] = nil
        if let owner = call.owner {
            environment.send(.error(ProtocolError(.internal, "the ledger could not store this frame; it was not counted",
                                                  callID: event.key.callID, seq: event.key.seq)), to: owner)
        }
        acknowledge(call)
    }

    private func summarize(_ callID: String) {
        guard let call = calls.removeValue(forKey: callID) else { return }
        environment.router.forget(callID)
        users[call.start.userID]?.calls.remove(callID)
        if users[call.start.userID]?.calls.isEmpty == true { users[call.start.userID] = nil }
        let byService = call.costByService.sorted { $0.key < $1.key }.map { (service: $0.key, cost: $0.value) }
        let cost = byService.reduce(ExactDecimal.zero) { $0 + $1.cost }
        var fee: ExactDecimal?
        var margin: ExactDecimal?
        if let revenue = call.start.revenue {
            if let payment = environment.prices.book.price(service: "stripe", operation: "payment", model: call.start.paymentMethod,
                                                           unit: .transactions, at: call.startedAt) {
                fee = PaymentFee.fee(forCharge: revenue, version: payment)
            }
            margin = try? revenue.subtracting(cost).subtracting(fee ?? .zero)
        }
        guard let owner = call.owner else { return }
        environment.send(.callSummary(callID: callID, cost: cost, byService: byService, revenue: call.start.revenue,
                                      paymentFee: fee, margin: margin), to: owner)
    }
}

/// Running money figures in metering. They cannot leave 38 digits (a frame costs at most
/// `frameCostMaximum`), so these keep the last value rather than trap if that invariant ever broke.
private extension ExactDecimal {
    static func + (lhs: ExactDecimal, rhs: ExactDecimal) -> ExactDecimal { (try? lhs.adding(rhs)) ?? lhs }
    static func += (lhs: inout ExactDecimal, rhs: ExactDecimal) { lhs = lhs + rhs }
    static func -= (lhs: inout ExactDecimal, rhs: ExactDecimal) { lhs = (try? lhs.subtracting(rhs)) ?? lhs }
}
