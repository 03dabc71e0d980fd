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
    private var staged: StagedFrame?
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
    private var unknownCallRecords: [ClientConnection: (second: Int64, recorded: Int)] = [:]
    /// The instant and prices of the input being handled.
    var now = Timestamp(microsecondsSinceEpoch: 0)
    var prices = PriceBook.empty

    private struct StagedFrame {
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

    // MARK: call.start and admission

    mutating func callStarted(_ start: CallStart, _ connection: ClientConnection, _ actions: inout [MeteringAction]) {
        let known = calls[start.callID]
        if let known, known.start.userID != start.userID {
            actions.append(.send(.callRejected(callID: start.callID, reason: "duplicate_call", spent: nil, limit: nil), to: connection))
            return
        }
        // Checked before anything changes: a refused start leaves a call it names where it was.
        if known?.owner != connection, calls.values.count(where: { $0.owner == connection }) >= settings.liveCallsPerConnectionMax {
            actions.append(.send(.callRejected(callID: start.callID, reason: "connection_call_limit", spent: nil, limit: nil), to: connection))
            actions.append(.count(.callRefusedForConnectionLimit))
            if known == nil { actions.append(.forgetRoute(callID: start.callID)) }
            return
        }
        if let index = calls.index(forKey: start.callID) {
            let existing = calls.values[index]
            switch existing.phase {
            case .admitting, .ending:
                // The answer to the start (or the summary) goes to the new connection.
                calls.values[index].owner = connection
                calls.values[index].lastMessageAt = now
                return
            case .active where existing.owner == connection, .closing where existing.owner == connection:
                // call.start again on the connection that carries the call: answered again.
                calls.values[index].lastMessageAt = now
                accept(start.callID, &actions)
                return
            case .active, .closing:
                // A reconnect resumes from the ledger, like on any other node: the call may have
                // moved on since this copy last saw it (its acks, spend and cutoff with it).
                forget(start.callID, &actions)
            }
        }
        let startedAt = start.startedAt ?? now
        calls[start.callID] = LiveCall(start: start, phase: .admitting(queued: []), owner: connection, startedAt: startedAt, lastMessageAt: now)
        actions.append(.pinRoute(callID: start.callID))
        actions.append(.register(start, startedAt: startedAt, budgetsAsOf: now))
    }

    /// The connection's calls lose their sender. Messages it sent that wait for an admission are
    /// dropped: none was answered, so the sender resends them on its next connection.
    private mutating func connectionClosed(_ connection: ClientConnection, _ actions: inout [MeteringAction]) {
        // Keys first, then changes: changing the dictionary while iterating its indices copies it.
        unknownCallRecords[connection] = nil
        let carried = calls.compactMap { $0.value.owner == connection ? $0.key : nil }
        for callID in carried { calls[callID]?.owner = nil }
        let waiting = calls.compactMap { $0.value.isAdmitting ? $0.key : nil }
        for callID in waiting.sorted() {
            guard let index = calls.index(forKey: callID), case .admitting(let queued) = calls.values[index].phase else { continue }
            var kept: [MeteringInput] = []
            for input in queued {
                switch input {
                case .usage(_, _, connection): actions.append(.frameHandled(callID: callID))
                case .callEnd(_, connection): break
                default: kept.append(input)
                }
            }
            calls.values[index].phase = .admitting(queued: kept)
        }
    }

    private mutating func registrationFailed(_ callID: String, _ reason: String, _ actions: inout [MeteringAction]) {
        guard let call = calls[callID], call.isAdmitting else { return }
        actions.append(.log(MeteringLog(level: .warning, message: "call registration failed", callID: callID, userID: call.start.userID,
                                        connection: call.owner, details: [("error", reason)])))
        refuseAdmission(callID, .error(ProtocolError(.overloaded, "the database is unavailable; send call.start again shortly", callID: callID)),
                        frames: (.overloaded, "call.start did not go through, so this frame was not taken; send call.start, then the frame again"),
                        &actions)
    }

    /// Answers a refused `call.start` and every message that waited for it, and forgets the call.
    mutating func refuseAdmission(_ callID: String, _ answer: ServerMessage, frames: (ProtocolErrorCode, String),
                                          _ actions: inout [MeteringAction]) {
        guard let call = calls.removeValue(forKey: callID), case .admitting(let queued) = call.phase else { return }
        actions.append(.forgetRoute(callID: callID))
        if let owner = call.owner { actions.append(.send(answer, to: owner)) }
        for case .usage(let frame, _, let connection) in queued {
            actions.append(.frameHandled(callID: callID))
            actions.append(.send(.error(ProtocolError(frames.0, frames.1, callID: callID, seq: frame.seq)), to: connection))
        }
    }

    private mutating func registered(_ callID: String, _ registration: CallRegistration, _ snapshot: UserBudgetSnapshot, asOf: Timestamp,
                                     _ actions: inout [MeteringAction]) {
        guard let index = calls.index(forKey: callID), case .admitting(let queued) = calls.values[index].phase,
              calls.values[index].pendingAdmission == nil else { return }
        let notTaken = "the call was not admitted, so usage for it is not taken"
        let registered: RegisteredCall
        switch registration {
        case .belongsToAnotherUser:
            refuseAdmission(callID, .callRejected(callID: callID, reason: "duplicate_call", spent: nil, limit: nil),
                            frames: (.unknownCall, notTaken), &actions)
            return
        case .ended:
            refuseAdmission(callID, .callRejected(callID: callID, reason: "call_ended", spent: nil, limit: nil),
                            frames: (.unknownCall, "the call has ended; usage for it is not taken"), &actions)
            return
        case .registered(let call): registered = call
        }
        // The connection that started it closed while it was registered, and nothing else is
        // waiting: nobody is served by this copy (the sender resumes wherever it reconnects).
        if calls.values[index].owner == nil && queued.isEmpty {
            forget(callID, &actions)
            return
        }
        let start = calls.values[index].start
        // The snapshot is the spend of the day and month containing `asOf` (a registration answered
        // just after midnight brings yesterday's figures: catching up starts today's).
        let user = users[start.userID] ?? UserBudget(start.userID, snapshot, defaults: settings.defaults, asOf: asOf)
        user.catchUp(to: now)
        // New or resumed, its day and month spend goes through this core's grant.
        if spendsThroughGrants(user.policy) && user.grant == nil { user.grant = BudgetGrant() }
        calls.values[index].pendingAdmission = registered
        let estimate = snapshot.averageCallCost ?? settings.defaultCallCostEstimate
        if registered.isNew {
            if let window = startWindowViolation(registered.startedAt) {
                actions.append(.markCall(userID: start.userID, callID: callID, status: "rejected", cutoffReason: nil))
                refuseAdmission(callID, .error(ProtocolError(.invalidTimestamp, window, callID: callID)), frames: (.unknownCall, notTaken), &actions)
                return
            }
            if user.grant == nil, let refusal = Admission.check(policy: user.policy, daySpent: user.day.spent, monthSpent: user.month.spent,
                                                                estimatedCallCost: estimate) {
                refuseForBudget(callID, refusal.refusal, spent: refusal.spent, limit: refusal.limit, &actions)
                return
            }
        }
        users[start.userID] = user
        guard user.grant != nil else { return completeAdmission(callID, user, &actions) }
        // Admitted once its expected cost is reserved in the user's grant (a resumed call is
        // admitted whatever the answer, and cut off if nothing could be had): its messages wait
        // for the answer rather than for a top-up.
        calls.values[index].reservation = estimate
        user.grant?.waitingAdmissions.append(callID)
        adjustGrant(user, &actions)
    }

    /// Admits (or resumes) a registered call: its state from the ledger, then the messages that
    /// waited for it. A call whose sender left meanwhile, with nothing waiting, is dropped.
    mutating func completeAdmission(_ callID: String, _ user: UserBudget, _ actions: inout [MeteringAction]) {
        guard let index = calls.index(forKey: callID), case .admitting(let queued) = calls.values[index].phase,
              let registered = calls.values[index].pendingAdmission else { return }
        calls.values[index].pendingAdmission = nil
        if calls.values[index].owner == nil && queued.isEmpty {
            forget(callID, &actions)
            return
        }
        calls.values[index].startedAt = registered.startedAt
        calls.values[index].generation = registered.generation
        calls.values[index].phase = .active
        calls.values[index].user = user
        replay(registered, into: &calls.values[index])
        actions.append(.log(MeteringLog(level: .debug, message: registered.isNew ? "call admitted" : "call resumed", callID: callID,
                                        userID: user.userID, connection: calls.values[index].owner, details: [])))
        user.calls.insert(callID)
        accept(callID, &actions)
        // A cutoff is part of the call wherever it resumes: its own spend, or its user's period.
        enforceReachedLimits(on: callID, &actions)
        backlog += queued
        if user.grant != nil { adjustGrant(user, &actions) }
    }

    /// Refuses a new call for its user's day or month budget.
    mutating func refuseForBudget(_ callID: String, _ refusal: AdmissionRefusal, spent: ExactDecimal, limit: ExactDecimal,
                                  _ actions: inout [MeteringAction]) {
        guard let call = calls[callID] else { return }
        actions.append(.markCall(userID: call.start.userID, callID: callID, status: "rejected", cutoffReason: nil,
                                 onlyIfGeneration: call.pendingAdmission?.generation))
        actions.append(.log(MeteringLog(level: .info, message: "call refused", callID: callID, userID: call.start.userID,
                                        connection: call.owner, details: [("reason", refusal.rawValue)])))
        refuseAdmission(callID, .callRejected(callID: callID, reason: refusal.rawValue, spent: spent, limit: limit),
                        frames: (.unknownCall, "the call was not admitted, so usage for it is not taken"), &actions)
    }

    /// Rebuilds a resumed call's billing state, resend detection and spend from the ledger.
    private func replay(_ registered: RegisteredCall, into call: inout LiveCall) {
        for committed in registered.committedEvents {
            let seq = committed.stored.seq
            call.settled.settle(seq)
            // Taken in already by a commit that reached this copy while it was being admitted.
            if call.acceptedHashes[seq] == committed.payloadHash { continue }
            call.acceptedHashes[seq] = committed.payloadHash
            if let priceID = committed.stored.priceID, let version = prices.version(id: priceID) {
                _ = call.meter.price(committed.stored.usage, with: version)
            }
            if let cost = committed.totalCost { call.spent += cost }
        }
        for (seq, reason) in registered.refusedFrames {
            call.settled.settle(seq)
            call.refusedForGood[seq] = RejectedFrameReason(rawValue: reason) ?? .ledgerRefused
        }
        // The resumed ack covers the unbroken run of settled seqs from 1 only: a seq missing below
        // the highest stored one may have been taken by a node that died before storing it.
        call.highestAckedSeq = call.settled.through
    }

    private func accept(_ callID: String, _ actions: inout [MeteringAction]) {
        guard let call = calls[callID], let owner = call.owner, let user = users[call.start.userID] else { return }
        actions.append(.send(.callAccepted(callID: callID, callLimit: user.policy.callLimit ?? .zero, monthSpent: user.month.spent,
                                           monthLimit: user.policy.monthLimit ?? .zero), to: owner))
        if call.highestAckedSeq > 0 { actions.append(.send(.ack(callID: callID, seq: call.highestAckedSeq), to: owner)) }
        if let cutoff = call.cutoff {
            actions.append(.send(.budgetCutoff(callID: callID, scope: cutoff.scope, spent: cutoff.spent, limit: cutoff.limit), to: owner))
        }
    }

    /// `nil` when a new call's start lies in the window around the server's clock, else the error text.
    private func startWindowViolation(_ startedAt: Timestamp) -> String? {
        let earliest = now.adding(seconds: -settings.callStartPastSeconds)
        let latest = now.adding(seconds: settings.clockSkewSeconds)
        guard startedAt < earliest || startedAt > latest else { return nil }
        return "call.start ts \(startedAt) is outside \(earliest) … \(latest) (the server's clock minus \(settings.callStartPastSeconds) s to plus \(settings.clockSkewSeconds) s); send the call's real start"
    }

    // MARK: Usage frames

    /// Handles a frame; `false` when it waits for its call's admission (it is handled later).
    @discardableResult
    private mutating func usage(_ frame: UsageFrame, _ hash: PayloadHash, _ connection: ClientConnection, _ actions: inout [MeteringAction]) -> Bool {
        guard let index = calls.index(forKey: frame.callID) else {
            actions.append(.send(.error(ProtocolError(.unknownCall, Self.noCallStart,
                                                      callID: frame.callID, seq: frame.seq)), to: connection))
            actions.append(mayRecordUnknownCallFrame(from: connection) ? .recordRejectedFrame(frame, reason: .unknownCall) : .count(.rejectedFrameNotRecorded))
            return true
        }
        let call = calls.values[index]
        guard call.owner == connection else { return refuseNotOwner(frame.callID, seq: frame.seq, connection, &actions) }
        if case .admitting(var queued) = call.phase {
            queued.append(.usage(frame, hash: hash, from: connection))
            call.phase = .admitting(queued: queued)
            return false
        }
        call.lastMessageAt = now
        // After call.end only the frames it waits for are taken, and resends of frames already taken.
        let closing: Bool
        switch call.phase {
        case .admitting, .active: closing = false
        case .closing where call.refusedSeqs.contains(frame.seq) || call.acceptedHashes[frame.seq] != nil: closing = true
        // A resend of a frame taken before the end (it may still be on its way): answered as a resend.
        case .ending where call.acceptedHashes[frame.seq] != nil: closing = false
        case .closing, .ending:
            actions.append(.send(.error(ProtocolError(.unknownCall, Self.callHasEnded,
                                                      callID: frame.callID, seq: frame.seq)), to: connection))
            return true
        }
        if let seen = call.acceptedHashes[frame.seq] {
            if seen != hash {
                actions.append(.send(.error(ProtocolError(.seqConflict, "seq \(frame.seq) was already used for different content",
                                                          callID: frame.callID, seq: frame.seq)), to: connection))
            } else if frame.seq <= call.highestAckedSeq {
                actions.append(.send(.ack(callID: frame.callID, seq: call.highestAckedSeq), to: connection))
            }
            return true
        }
        if !call.refusedForGood.isEmpty, let reason = call.refusedForGood[frame.seq] {
            actions.append(.send(.error(ProtocolError(reason.errorCode, "seq \(frame.seq) was refused for good before (\(reason.rawValue)); it is not taken",
                                                      callID: frame.callID, seq: frame.seq)), to: connection))
            return true
        }
        let earliest = call.startedAt.adding(seconds: -settings.clockSkewSeconds)
        let latest = now.adding(seconds: settings.clockSkewSeconds)
        if frame.usage.occurredAt < earliest || frame.usage.occurredAt > latest {
            refuseForGood(frame, .invalidTimestamp,
                          "ts \(frame.usage.occurredAt) is outside \(earliest) … \(latest) (the call's start minus \(settings.clockSkewSeconds) s to the server's clock plus \(settings.clockSkewSeconds) s)",
                          call: call, closing: closing, connection, &actions)
            return true
        }
        let quote = call.meter.quote(frame.usage, book: prices)
        if case .priced(let priced) = quote.outcome, priced.totalCost > MeteringSettings.frameCostMaximum {
            refuseForGood(frame, .invalidAmount,
                          "this frame would cost \(priced.totalCost) USD, above the \(MeteringSettings.frameCostMaximum) USD a frame may cost; check amount and unit",
                          call: call, closing: closing, connection, &actions)
            return true
        }
        // A user's day and month budget is spent through this core's grant: none left, the frame
        // waits for the answer on its way.
        // (Read in place: binding the grant would copy it for every frame.)
        if call.cutoff == nil, let user = call.user, user.grant?.mayPrice(at: now) == false,
           case .priced(let priced) = quote.outcome, priced.totalCost > .zero {
            return waitForGrant(frame, hash, cost: priced.totalCost, call, user, connection, &actions)
        }
        staged = StagedFrame(call: call, seq: frame.seq, occurredAt: frame.usage.occurredAt, hash: hash, quote: quote,
                             connection: connection, closing: closing)
        actions.append(.submit(UsageEvent(
            key: EventKey(callID: frame.callID, seq: frame.seq), userID: call.start.userID, callStartedAt: call.startedAt,
            personaID: call.start.personaID, usage: frame.usage, pricing: quote.outcome,
            metadataJSON: frame.metadataJSON, externalID: frame.externalID, payloadHash: hash
        )))
        return true
    }

    /// Refuses a frame for good (the sender must not resend it): its seq is settled.
    private mutating func refuseForGood(_ frame: UsageFrame, _ reason: RejectedFrameReason, _ message: String, call: LiveCall,
                                        closing: Bool, _ connection: ClientConnection, _ actions: inout [MeteringAction]) {
        actions.append(.send(.error(ProtocolError(reason.errorCode, message, callID: frame.callID, seq: frame.seq)), to: connection))
        actions.append(.recordRejectedFrame(frame, reason: reason))
        settleRefused(frame.seq, reason, call: call, closing: closing, &actions)
    }

    private mutating func settleRefused(_ seq: Int64, _ reason: RejectedFrameReason, call: LiveCall, closing: Bool, _ actions: inout [MeteringAction]) {
        call.refusedForGood[seq] = reason
        call.refusedSeqs.remove(seq)
        call.settled.settle(seq)
        acknowledge(call, &actions)
        if closing { endIfSettled(call.start.callID, &actions) }
    }

    /// A usage frame the decoder refused for good, answered here: what it says depends on the
    /// call. Carried by this connection, the error is sent, the seq kept (so the call settles it
    /// wherever it resumes) and settled; otherwise `unknown_call`, as for any frame, so the sender
    /// starts the call here and sends it again (it must not count a seq as settled that no call
    /// here settled).
    private mutating func refusedAtDecoding(_ error: ProtocolError, _ connection: ClientConnection, _ actions: inout [MeteringAction]) {
        guard let callID = error.callID, let seq = error.seq, let reason = RejectedFrameReason(decoding: error.code) else { return }
        guard let call = calls[callID] else {
            actions.append(.send(.error(ProtocolError(.unknownCall, Self.noCallStart, callID: callID, seq: seq)), to: connection))
            return
        }
        guard call.owner == connection else {
            refuseNotOwner(callID, seq: seq, connection, &actions)
            return
        }
        let closing: Bool
        switch call.phase {
        case .admitting, .active: closing = false
        case .closing where call.refusedSeqs.contains(seq): closing = true
        case .closing, .ending:
            actions.append(.send(.error(ProtocolError(.unknownCall, Self.callHasEnded, callID: callID, seq: seq)), to: connection))
            return
        }
        actions.append(.send(.error(error), to: connection))
        guard call.acceptedHashes[seq] == nil, call.refusedForGood[seq] == nil, seq > call.settled.through else { return }
        actions.append(.recordUndecodedFrame(callID: callID, seq: seq, reason: reason, error: error))
        if call.isAdmitting {
            // Settled with what the ledger holds once the call is admitted (and acknowledged then).
            call.refusedForGood[seq] = reason
            call.settled.settle(seq)
        } else {
            settleRefused(seq, reason, call: call, closing: closing, &actions)
        }
    }

    private mutating func submitted(_ accepted: Bool, _ actions: inout [MeteringAction]) {
        // Moved out, not copied.
        guard let staged = staged.take() else { preconditionFailure("submitted(accepted:) answers a submit action") }
        let call = staged.call
        let seq = staged.seq
        guard accepted else {
            call.refusedSeqs.insert(seq)
            actions.append(.send(.error(ProtocolError(.overloaded, "the ledger is behind; this frame was not taken, send it again shortly",
                                                      callID: call.start.callID, seq: seq)), to: staged.connection))
            return
        }
        call.meter.advance(with: staged.quote)
        call.acceptedHashes[seq] = staged.hash
        if !call.refusedSeqs.isEmpty { call.refusedSeqs.remove(seq) }
        if call.cutoff != nil { call.streamingAfterCutoff = true }
        switch staged.quote.outcome {
        case .priced(let priced): charge(priced.totalCost, at: staged.occurredAt, to: call, &actions)
        case .unpriced: actions.append(.count(.unpricedEvent))
        }
        if staged.closing { endIfSettled(call.start.callID, &actions) }
    }

    // MARK: call.end

    private mutating func callEnded(_ end: CallEnd, _ connection: ClientConnection, _ input: MeteringInput, _ actions: inout [MeteringAction]) {
        guard let index = calls.index(forKey: end.callID) else {
            actions.append(.send(.error(ProtocolError(.unknownCall, "no active call with this call_id on this server", callID: end.callID)), to: connection))
            return
        }
        guard calls.values[index].owner == connection else {
            refuseNotOwner(end.callID, seq: nil, connection, &actions)
            return
        }
        calls.values[index].lastMessageAt = now
        switch calls.values[index].phase {
        case .admitting(var queued):
            queued.append(input)
            calls.values[index].phase = .admitting(queued: queued)
        case .active:
            // Frames refused transiently are still the sender's to resend: the call ends once they are taken.
            calls.values[index].phase = .closing(endedAt: end.endedAt ?? now)
            endIfSettled(end.callID, &actions)
        case .closing, .ending:
            break  // a repeated call.end: the summary goes to the sender when the call ends
        }
    }

    /// Whether a frame for an unknown call from `connection` gets its audit row: at most
    /// `unknownCallRecordsPerConnectionPerSecond` a second, so junk never costs an insert apiece.
    private mutating func mayRecordUnknownCallFrame(from connection: ClientConnection) -> Bool {
        let second = now.microsecondsSinceEpoch / 1_000_000
        var entry = unknownCallRecords[connection] ?? (second, 0)
        if entry.second != second { entry = (second, 0) }
        entry.recorded += 1
        unknownCallRecords[connection] = entry
        return entry.recorded <= settings.unknownCallRecordsPerConnectionPerSecond
    }

    static let noCallStart = "no call.start was seen for this call_id on this server; send call.start first"
    static let callHasEnded = "the call has ended (call.end, or silence for the abandon timeout); usage after it is not taken"

    /// Only the connection that started or resumed a call (its latest `call.start`) speaks for it:
    /// usage or `call.end` from another is refused without touching the call, so it can neither
    /// take the call's acks, cutoffs and summary nor use up its seqs. Returns `true` (handled).
    @discardableResult
    private func refuseNotOwner(_ callID: String, seq: Int64?, _ connection: ClientConnection, _ actions: inout [MeteringAction]) -> Bool {
        actions.append(.send(.error(ProtocolError(.unknownCall, "this connection has not started or resumed this call; send call.start on it first",
                                                  callID: callID, seq: seq)), to: connection))
        return true
    }

    /// Ends a closing call once no frame refused transiently is still expected.
    private mutating func endIfSettled(_ callID: String, _ actions: inout [MeteringAction]) {
        guard let call = calls[callID], case .closing(let endedAt) = call.phase, call.refusedSeqs.isEmpty else { return }
        finish(callID, endedAt: endedAt, status: call.endStatus, &actions)
    }

    /// Hands the call's ending to the ledger. A copy without its connection ends the call only if
    /// no later registration resumed it elsewhere.
    mutating func finish(_ callID: String, endedAt: Timestamp, status: String, conditional: Bool = false, _ actions: inout [MeteringAction]) {
        guard let index = calls.index(forKey: callID) else { return }
        calls.values[index].phase = .ending
        let call = calls.values[index]
        actions.append(.submitEnding(CallEnding(userID: call.start.userID, callID: callID, endedAt: endedAt, status: status,
                                                onlyIfGeneration: conditional ? call.generation : nil)))
    }

    /// Drops the call from this core (its route too).
    mutating func forget(_ callID: String, _ actions: inout [MeteringAction]) {
        guard let call = calls.removeValue(forKey: callID) else { return }
        actions.append(.forgetRoute(callID: callID))
        let userID = call.start.userID
        users[userID]?.calls.remove(callID)
        dropIfIdle(userID, &actions)
    }
}
