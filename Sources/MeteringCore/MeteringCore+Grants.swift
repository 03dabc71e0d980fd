import VoiceMeterDomain

/// Budgets that hold across cores and nodes (issue 22): a user whose limits cut off spends day
/// and month budget only through a grant this core holds in the ledger. A new call reserves its
/// expected cost in the grant before it is admitted; the grant is topped up with a few seconds
/// of the user's burn before it runs out, renewed before its lease ends, and given back when the
/// user's calls end. When the ledger has nothing more to give, the user's calls here are cut off.
extension MeteringCore {
    /// Whether a user's spend is held through grants: a day or month limit that cuts off.
    func spendsThroughGrants(_ policy: BudgetPolicy) -> Bool {
        policy.autoCutoff && (policy.dayLimit != nil || policy.monthLimit != nil)
    }

    /// How long a core waits after a failed request before the next (the database is away).
    static let grantRetrySeconds: Int64 = 1

    /// Sends the request the user's grant needs now, if any: the next waiting reservation, a
    /// top-up, a shrink, a renewal, or the return of what no call spends any more.
    mutating func adjustGrant(_ user: UserBudget, _ actions: inout [MeteringAction]) {
        guard users[user.userID] === user, let grant = user.grant, grant.pending == nil, !grant.stopped,
              grant.retryAfter.map({ now >= $0 }) ?? true else { return }
        while let callID = user.grant?.waitingAdmissions.first {
            guard let call = calls[callID], call.pendingAdmission != nil else {
                user.grant?.waitingAdmissions.removeFirst()
                continue
            }
            let isNew = call.pendingAdmission?.isNew == true
            requestGrant(user, want: call.reservation, minimum: isNew ? call.reservation : .zero, keepingAvailable: grant.available,
                         purpose: .admission(callID: callID), &actions)
            return
        }
        let spending = user.calls.compactMap { calls[$0] }.filter { $0.cutoff == nil && !$0.isAdmitting }
        guard !spending.isEmpty else {
            // Nothing left to spend for: what is not on its way goes back.
            if grant.available > .zero || (grant.held > .zero && now >= grant.renewAfter) {
                requestGrant(user, want: .zero, minimum: .zero, keepingAvailable: .zero, purpose: .release, &actions)
            }
            return
        }
        let target = targetHeadroom(of: spending, grant)
        let half = (try? target.divided(by: ExactDecimal(2), scale: 10, .down)) ?? .zero
        user.grant?.plan(topUpBelow: half)
        let want = max(.zero, target - grant.available)
        let short = grant.available <= .zero || (!grant.roomExhausted && grant.available < half)
        if (short || now >= grant.validUntil) && want > .zero {
            requestGrant(user, want: want, minimum: .zero, keepingAvailable: grant.available, purpose: .topUp, &actions)
        } else if grant.available > target + target {
            requestGrant(user, want: .zero, minimum: .zero, keepingAvailable: target, purpose: .renewal, &actions)
        } else if now >= grant.renewAfter, grant.held > .zero {
            if now >= grant.validUntil {
                // The lease ran out: a request of its own re-checks what still fits.
                requestGrant(user, want: .zero, minimum: .zero, keepingAvailable: grant.available, purpose: .renewal, &actions)
            } else {
                grantRenewal.due = true  // with the core's other leases due, in one statement
            }
        }
    }

    /// Renews together the leases that are due (after the input that found one due): one
    /// statement for all of them, so many users with little burn cost one round trip, not one each.
    mutating func renewDueGrants(_ actions: inout [MeteringAction]) {
        guard grantRenewal.due, grantRenewal.mayAsk(at: now) else { return }
        grantRenewal.due = false
        let due = users.keys.sorted().filter { userID in
            guard let grant = users[userID]?.grant else { return false }
            return grant.pending == nil && !grant.stopped && grant.held > .zero && now < grant.validUntil && now >= grant.renewAfter
        }
        guard !due.isEmpty else { return }
        actions.append(.renewGrants(grantRenewal.next(userIDs: due, asOf: now, leaseSeconds: settings.grantLeaseSeconds)))
    }

    /// The renewal's answer: the leases the ledger extended run from when it was asked; a grant
    /// it no longer held (its lease ran out there) prices nothing until a request re-checks it.
    mutating func grantsRenewed(_ renewal: GrantRenewal, _ renewed: Set<String>, _ actions: inout [MeteringAction]) {
        guard grantRenewal.answered(renewal) else { return }
        for userID in renewal.userIDs {
            guard let user = users[userID], user.grant != nil else { continue }
            if renewed.contains(userID) {
                user.grant?.renew(asOf: renewal.asOf, leaseSeconds: renewal.leaseSeconds)
            } else {
                user.grant?.loseLease(at: now)
                adjustGrant(user, &actions)
            }
        }
    }

    /// What the user's spending calls here should hold: what is left of their reservations plus
    /// `grantSeconds` of the user's live burn here (what was priced since the last request, per
    /// second; at least what calls of the expected cost spend over five minutes), and at least
    /// one frame.
    private func targetHeadroom(of spending: [LiveCall], _ grant: BudgetGrant) -> ExactDecimal {
        var reserved = ExactDecimal.zero
        for call in spending where call.reservation > call.spent { reserved += call.reservation - call.spent }
        let grantSeconds = ExactDecimal(settings.grantSeconds)
        let expectedBurn = (try? settings.defaultCallCostEstimate.multiplied(by: grantSeconds).multiplied(by: ExactDecimal(spending.count))
            .divided(by: ExactDecimal(300), scale: 10, .up)) ?? .zero
        let liveBurn = (try? grant.burnPerSecond(at: now).multiplied(by: grantSeconds)) ?? .zero
        return max(reserved + max(liveBurn, expectedBurn), grant.largestFrameCost)
    }

    /// Sends a request the grant waits for (one at a time).
    private mutating func requestGrant(_ user: UserBudget, want: ExactDecimal, minimum: ExactDecimal, keepingAvailable: ExactDecimal,
                                       purpose: GrantPurpose, _ actions: inout [MeteringAction]) {
        guard let grant = user.grant else { return }
        let request = nextGrantRequest(user.userID, keep: max(.zero, grant.inFlight + min(grant.available, keepingAvailable)),
                                       want: want, minimum: minimum, purpose: purpose)
        user.grant?.send(request, keepingAvailable: keepingAvailable)
        actions.append(.takeGrant(request))
    }

    /// Returns everything of a grant that is not on its way, without waiting for the answer
    /// (the user leaves this core, or the core stops).
    private mutating func returnGrant(of userID: String, keep: ExactDecimal, _ actions: inout [MeteringAction]) {
        actions.append(.takeGrant(nextGrantRequest(userID, keep: keep, want: .zero, minimum: .zero, purpose: .release)))
    }

    private mutating func nextGrantRequest(_ userID: String, keep: ExactDecimal, want: ExactDecimal, minimum: ExactDecimal,
                                           purpose: GrantPurpose) -> GrantRequest {
        grantNumber += 1
        return GrantRequest(userID: userID, number: grantNumber, keep: keep, want: want, minimum: minimum,
                            defaultDayLimit: settings.defaults.dayLimit, defaultMonthLimit: settings.defaults.monthLimit,
                            asOf: now, leaseSeconds: settings.grantLeaseSeconds, purpose: purpose)
    }

    // MARK: Answers

    mutating func grantAnswered(_ request: GrantRequest, _ answer: GrantAnswer, _ actions: inout [MeteringAction]) {
        guard let user = users[request.userID], user.grant?.take(answer, for: request) == true else { return }
        switch request.purpose {
        case .admission(let callID):
            user.grant?.waitingAdmissions.removeAll { $0 == callID }
            if answer.extra >= request.want || calls[callID]?.pendingAdmission?.isNew == false {
                completeAdmission(callID, user, &actions)
            } else {
                let scope = answer.shortScope ?? .month
                refuseForBudget(callID, scope == .day ? .dayBudgetExhausted : .monthBudgetExhausted, spent: answer.used(in: scope),
                                limit: user.policy.limit(for: scope) ?? .zero, &actions)
            }
        case .topUp, .renewal:
            // Nothing more to be had and nothing left: the user's calls here are cut off.
            if let scope = answer.shortScope, answer.extra == .zero, let grant = user.grant, grant.available <= .zero,
               let anyCall = user.calls.sorted().first(where: { calls[$0]?.cutoff == nil && calls[$0]?.isAdmitting == false }) {
                act(on: .limitReached(scope: scope, spent: answer.used(in: scope), limit: user.policy.limit(for: scope) ?? .zero),
                    userID: user.userID, callID: anyCall, &actions)
            }
        case .release: break
        }
        adjustGrant(user, &actions)
        resumeFramesWaitingForGrant(of: user)
        dropIfIdle(user.userID, &actions)
    }

    mutating func grantFailed(_ request: GrantRequest, _ reason: String, _ actions: inout [MeteringAction]) {
        guard let user = users[request.userID],
              user.grant?.fail(request, retryAfter: now.adding(seconds: Self.grantRetrySeconds)) == true else { return }
        // The calls waiting for a reservation are refused for now: their senders start them again.
        let waiting = user.grant?.waitingAdmissions ?? []
        user.grant?.waitingAdmissions = []
        for callID in waiting {
            guard let call = calls[callID], let registered = call.pendingAdmission else { continue }
            // A new call's retry is a new admission; a resumed call stays what it was.
            if registered.isNew {
                actions.append(.markCall(userID: user.userID, callID: callID, status: "rejected", cutoffReason: nil,
                                         onlyIfGeneration: registered.generation))
            }
            refuseAdmission(callID, .error(ProtocolError(.overloaded, "the database is unavailable; send call.start again shortly", callID: callID)),
                            frames: (.overloaded, "call.start did not go through, so this frame was not taken; send call.start, then the frame again"),
                            &actions)
        }
        actions.append(.log(MeteringLog(level: .warning, message: "budget grant failed", callID: "", userID: user.userID, connection: nil,
                                        details: [("error", reason)])))
        // Handled again: refused for now, as no request can be made before the retry.
        resumeFramesWaitingForGrant(of: user)
        dropIfIdle(user.userID, &actions)
    }

    /// The server stops: what every grant holds beyond the frames on their way goes back.
    mutating func releaseGrants(_ actions: inout [MeteringAction]) {
        for userID in users.keys.sorted() {
            guard let user = users[userID], user.grant != nil else { continue }
            user.grant?.stopPricing()
            returnGrant(of: userID, keep: user.grant?.kept ?? .zero, &actions)
        }
    }

    /// A user whose calls here are all gone leaves this core, returning its grant, once no
    /// answer is awaited.
    mutating func dropIfIdle(_ userID: String, _ actions: inout [MeteringAction]) {
        guard let user = users[userID], user.calls.isEmpty else { return }
        if let grant = user.grant {
            guard grant.pending == nil, grant.waitingAdmissions.isEmpty else { return }
            if grant.held > .zero { returnGrant(of: userID, keep: max(.zero, grant.inFlight), &actions) }
        }
        users[userID] = nil
    }

    /// The user's limits changed whether spend goes through grants.
    mutating func switchGrants(of user: UserBudget, _ actions: inout [MeteringAction]) {
        let wanted = spendsThroughGrants(user.policy)
        if wanted && user.grant == nil {
            user.grant = BudgetGrant()
        } else if !wanted, let grant = user.grant {
            // Limits that only warn need no reservation: the calls waiting for one are admitted
            // (while the grant lists them, the user stays here).
            for callID in grant.waitingAdmissions { completeAdmission(callID, user, &actions) }
            user.grant = nil
            returnGrant(of: user.userID, keep: .zero, &actions)
            dropIfIdle(user.userID, &actions)
        }
    }

    // MARK: The per-frame check

    /// A priced frame of a call not cut off, while the user's grant has nothing left (or its
    /// lease ran out): it waits for the request on its way (returns `false`: handled again with
    /// the answer, priced or, after a cutoff, recorded). With no request possible (the database
    /// is away) it is refused for now, named, and resent by the sender. Returns `true` then.
    mutating func waitForGrant(_ frame: UsageFrame, _ hash: PayloadHash, cost: ExactDecimal, _ call: LiveCall, _ user: UserBudget,
                               _ connection: ClientConnection, _ actions: inout [MeteringAction]) -> Bool {
        user.grant?.noteFrameCost(cost)
        adjustGrant(user, &actions)
        // Not taken yet either way: a call.end waits for it (as for a frame refused for now).
        call.refusedSeqs.insert(frame.seq)
        if user.grant?.pending != nil {
            user.framesWaitingForGrant.append(.usage(frame, hash: hash, from: connection))
            return false
        }
        actions.append(.send(.error(ProtocolError(.overloaded, "waiting for this user's budget grant from the database; send the frame again shortly",
                                                  callID: frame.callID, seq: frame.seq)), to: connection))
        actions.append(.count(.frameRefusedForGrant))
        return true
    }

    /// The frames that waited for an answer are handled again, in order.
    private mutating func resumeFramesWaitingForGrant(of user: UserBudget) {
        guard !user.framesWaitingForGrant.isEmpty else { return }
        backlog += user.framesWaitingForGrant
        user.framesWaitingForGrant.removeAll()
    }
}

/// A core's lease renewals: due when a grant's renewal time has passed; one on its way at a time;
/// after a failure, none before the retry time.
struct GrantRenewals: Sendable {
    var due = false
    private(set) var pending: GrantRenewal?
    private var number = 0
    private var retryAfter: Timestamp?

    func mayAsk(at now: Timestamp) -> Bool {
        pending == nil && (retryAfter.map { now >= $0 } ?? true)
    }

    mutating func next(userIDs: [String], asOf: Timestamp, leaseSeconds: Int64) -> GrantRenewal {
        number += 1
        let renewal = GrantRenewal(number: number, userIDs: userIDs, asOf: asOf, leaseSeconds: leaseSeconds)
        pending = renewal
        return renewal
    }

    /// Takes the answer to the pending renewal; `false` if it answers another.
    mutating func answered(_ renewal: GrantRenewal) -> Bool {
        guard pending?.number == renewal.number else { return false }
        pending = nil
        retryAfter = nil
        return true
    }

    /// The pending renewal failed: the leases count as before (they may run out: the per-frame
    /// check stops pricing then), and it is asked again after `retryAfter`.
    mutating func failed(_ renewal: GrantRenewal, retryAfter instant: Timestamp) {
        guard pending?.number == renewal.number else { return }
        pending = nil
        retryAfter = instant
        due = true
    }
}

/// What a core holds of a user's budget (for the simulation's invariants and tests).
public struct GrantAudit: Sendable {
    public var userID: String
    public var held: ExactDecimal
    public var available: ExactDecimal
    public var inFlight: ExactDecimal
    public var awaitsAnswer: Bool
    public var validUntil: Timestamp
}

extension MeteringCore {
    /// The grants this core holds, by user.
    public func grantAudit() -> [GrantAudit] {
        users.keys.sorted().compactMap { userID in
            guard let grant = users[userID]?.grant else { return nil }
            return GrantAudit(userID: userID, held: grant.held, available: grant.available, inFlight: grant.inFlight,
                              awaitsAnswer: grant.pending != nil, validUntil: grant.validUntil)
        }
    }
}
