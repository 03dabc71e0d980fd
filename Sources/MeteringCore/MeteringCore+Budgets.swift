import VoiceMeterDomain

extension MeteringCore {
    // MARK: Spend and signals

    /// Adds a frame's cost to its call and user (in the periods of its `ts`) and acts on every budget it crosses.
    mutating func charge(_ cost: ExactDecimal, at instant: Timestamp, to call: LiveCall, _ actions: inout [MeteringAction]) {
        // Set at admission: no lookup of the user per frame.
        guard let user = call.user else { return }
        call.spent += cost
        user.day.charge(cost, at: instant, now: now)
        user.month.charge(cost, at: instant, now: now)
        user.grant?.charge(cost)
        if user.grant?.needsRequest(at: now) == true { adjustGrant(user, &actions) }
        let callSignals = call.budget.check(spent: call.spent, policy: user.policy)
        let daySignals = user.day.meter.check(spent: user.day.spent, policy: user.policy)
        let monthSignals = user.month.meter.check(spent: user.month.spent, policy: user.policy)
        // Nearly every frame crosses nothing: no signal arrays joined.
        if !callSignals.isEmpty || !daySignals.isEmpty || !monthSignals.isEmpty {
            for signal in callSignals + daySignals + monthSignals { act(on: signal, userID: call.start.userID, callID: call.start.callID, &actions) }
        }
        // A limit whose meter fired before (before spend fell back, or before a call joined) holds
        // for every call it covers: checked only while such a limit stands.
        guard user.policy.autoCutoff else { return }
        if call.cutoff == nil && call.budget.limitReached { enforceReachedLimits(on: call.start.callID, &actions) }
        if user.day.meter.limitReached || user.month.meter.limitReached {
            let uncut = user.calls.filter { calls[$0]?.cutoff == nil }
            for id in uncut.sorted() { enforceReachedLimits(on: id, &actions) }
        }
    }

    mutating func act(on signal: BudgetSignal, userID: String, callID: String, _ actions: inout [MeteringAction]) {
        guard let user = users[userID] else { return }
        switch signal {
        case .warning(let scope, let spent, let limit, let percent, _):
            if let owner = calls[callID]?.owner {
                actions.append(.send(.budgetWarning(callID: callID, scope: scope, spent: spent, limit: limit, percent: percent), to: owner))
            }
            actions.append(.recordAlert(CostAlert(type: "budget_warning", scope: scope.rawValue, userID: userID, callID: callID, spent: spent,
                                                  limit: limit, percent: percent, message: "\(scope.rawValue) budget at \(percent)% (\(spent) of \(limit) USD)")))
        case .limitReached(let scope, let spent, let limit):
            guard user.policy.autoCutoff else {
                actions.append(.recordAlert(CostAlert(type: "budget_warning", scope: scope.rawValue, userID: userID, callID: callID, spent: spent,
                                                      limit: limit, percent: nil, message: "\(scope.rawValue) limit of \(limit) USD reached; auto-cutoff is off")))
                return
            }
            actions.append(.recordAlert(CostAlert(type: "budget_cutoff", scope: scope.rawValue, userID: userID, callID: callID, spent: spent,
                                                  limit: limit, percent: nil, message: "\(scope.rawValue) limit of \(limit) USD reached: calls cut off")))
            let affected = scope == .call ? [callID] : user.calls.sorted()
            for id in affected { cutOff(id, scope: scope, spent: spent, limit: limit, &actions) }
        }
    }

    private mutating func cutOff(_ callID: String, scope: BudgetScope, spent: ExactDecimal, limit: ExactDecimal, _ actions: inout [MeteringAction]) {
        guard let index = calls.index(forKey: callID), calls.values[index].cutoff == nil, !calls.values[index].isAdmitting else { return }
        calls.values[index].cutoff = LiveCall.Cutoff(scope: scope, spent: spent, limit: limit)
        let call = calls.values[index]
        actions.append(.count(.budgetCutoff))
        actions.append(.log(MeteringLog(level: .info, message: "call cut off", callID: callID, userID: call.start.userID, connection: call.owner,
                                        details: [("scope", scope.rawValue), ("spent", "\(spent)"), ("limit", "\(limit)")])))
        if let owner = call.owner {
            actions.append(.send(.budgetCutoff(callID: callID, scope: scope, spent: spent, limit: limit), to: owner))
        }
        actions.append(.markCall(userID: call.start.userID, callID: callID, status: "cut_off", cutoffReason: "\(scope.rawValue)_limit"))
    }

    /// Cuts off a call that joins (or resumes) while its own limit or its user's day or month
    /// limit is already reached: a cutoff does not depend on where the call was when it was decided.
    mutating func enforceReachedLimits(on callID: String, _ actions: inout [MeteringAction]) {
        guard let call = calls[callID], call.cutoff == nil, !call.isAdmitting, let user = users[call.start.userID], user.policy.autoCutoff
        else { return }
        for scope in BudgetScope.allCases {
            guard let limit = user.policy.limit(for: scope) else { continue }
            let spent = scope == .call ? call.spent : user.spent(in: scope)
            if hasReached(spent, limit) {
                cutOff(callID, scope: scope, spent: spent, limit: limit, &actions)
                return
            }
        }
    }

    // MARK: The tick and refreshes

    /// Every `tickSeconds`: re-send cutoffs to calls still streaming, close abandoned calls,
    /// project burn rates, evaluate platform quotas, and refresh users' committed spend.
    mutating func tick(_ actions: inout [MeteringAction]) {
        // In call id order: the same inputs give the same actions.
        let byID = calls.keys.sorted()
        for callID in byID {
            guard let index = calls.index(forKey: callID), calls.values[index].streamingAfterCutoff else { continue }
            calls.values[index].streamingAfterCutoff = false
            if let owner = calls.values[index].owner, let cutoff = calls.values[index].cutoff {
                actions.append(.send(.budgetCutoff(callID: callID, scope: cutoff.scope, spent: cutoff.spent, limit: cutoff.limit), to: owner))
            }
        }
        let silentSince = now.adding(seconds: -settings.abandonAfterSeconds)
        for callID in byID {
            guard let call = calls[callID], call.lastMessageAt <= silentSince else { continue }
            switch call.phase {
            // Silence ends a call only if no later registration resumed it elsewhere: the copy's
            // connection may be gone, or half-open (the sender moved on without it closing here).
            case .active: finish(callID, endedAt: call.lastMessageAt, status: "abandoned", conditional: true, &actions)
            // The refused frames never came back here: the call ends with what was stored, unless
            // it moved on (the sender may have resent them elsewhere, its connection here half-open).
            case .closing(let endedAt): finish(callID, endedAt: endedAt, status: call.endStatus, conditional: true, &actions)
            case .admitting, .ending: break
            }
        }
        warnOfProjectedExhaustion(byID, &actions)
        // Leases renewed, failed requests retried, reservations of ended calls given back.
        for userID in users.keys.sorted() { if let user = users[userID], user.grant != nil { adjustGrant(user, &actions) } }
        if settings.evaluatesPlatformQuotas { actions.append(.evaluateQuotas(asOf: now)) }
        if !users.isEmpty { actions.append(.refreshBudgets(userIDs: users.keys.sorted(), asOf: now, paced: true)) }
    }

    /// Beyond the seed: a call whose per-call limit will be exhausted before the next tick at its
    /// current burn rate is warned once, with the projected time.
    private mutating func warnOfProjectedExhaustion(_ callIDs: [String], _ actions: inout [MeteringAction]) {
        for callID in callIDs {
            guard let index = calls.index(forKey: callID), calls.values[index].cutoff == nil, !calls.values[index].projectionWarned else { continue }
            let call = calls.values[index]
            guard case .active = call.phase, let limit = users[call.start.userID]?.policy.callLimit,
                  let at = BurnProjection.exhaustsWithin(horizonSeconds: Int64(settings.tickSeconds), spent: call.spent,
                                                         limit: limit, since: call.startedAt, now: now)
            else { continue }
            calls.values[index].projectionWarned = true
            actions.append(.recordAlert(CostAlert(type: "projected_exhaustion", scope: "call", userID: call.start.userID, callID: callID,
                                                  spent: call.spent, limit: limit, percent: nil,
                                                  message: "at its burn rate the call reaches its \(limit) USD limit at \(at)")))
        }
    }

    /// Takes fresh settings and committed spend. Limits are live: a changed limit starts its
    /// meters over (a raised limit cuts off again when it is reached), lifts cutoffs it no longer
    /// justifies, and cuts off calls it now does.
    mutating func budgetsRefreshed(_ snapshots: [String: UserBudgetSnapshot], asOf: Timestamp, _ actions: inout [MeteringAction]) {
        for (userID, snapshot) in snapshots.sorted(by: { $0.key < $1.key }) {
            // The object, not an index: what follows may add or drop users.
            guard let user = users[userID] else { continue }
            let policy = snapshot.settings.policy(over: settings.defaults)
            let policyChanged = policy != user.policy
            user.policy = policy
            user.day.refresh(committed: snapshot.daySpent, asOf: asOf)
            user.month.refresh(committed: snapshot.monthSpent, asOf: asOf)
            if policyChanged {
                switchGrants(of: user, &actions)
                for callID in user.calls.sorted() { liftUnjustifiedCutoff(callID, user: user, &actions) }
            }
            // New settings may put a running call over its own limit too.
            for callID in user.calls.sorted() {
                guard let index = calls.index(forKey: callID), !calls.values[index].isAdmitting else { continue }
                let signals = calls.values[index].budget.check(spent: calls.values[index].spent, policy: user.policy)
                for signal in signals { act(on: signal, userID: userID, callID: callID, &actions) }
            }
            let daySignals = user.day.meter.check(spent: user.day.spent, policy: user.policy)
            let monthSignals = user.month.meter.check(spent: user.month.spent, policy: user.policy)
            if let anyCall = user.calls.sorted().first(where: { calls[$0]?.isAdmitting == false }) {
                for signal in daySignals + monthSignals { act(on: signal, userID: userID, callID: anyCall, &actions) }
            }
            // A limit reached before (auto-cutoff turned on, a meter that fired for another call) holds for every call.
            for callID in user.calls.sorted() { enforceReachedLimits(on: callID, &actions) }
            if user.grant != nil { adjustGrant(user, &actions) }
        }
    }

    /// After a settings change, a cutoff whose limit was raised or cleared (or auto-cutoff turned
    /// off) no longer holds: it is not re-sent, and the call ends `completed` unless it is cut
    /// off again. (Spend that falls below the limit, a frame refused after all, lifts nothing.)
    private mutating func liftUnjustifiedCutoff(_ callID: String, user: UserBudget, _ actions: inout [MeteringAction]) {
        guard let index = calls.index(forKey: callID), let cutoff = calls.values[index].cutoff else { return }
        let spent = cutoff.scope == .call ? calls.values[index].spent : user.spent(in: cutoff.scope)
        if user.policy.autoCutoff, let limit = user.policy.limit(for: cutoff.scope), hasReached(spent, limit) { return }
        calls.values[index].cutoff = nil
        calls.values[index].streamingAfterCutoff = false
        let call = calls.values[index]
        actions.append(.log(MeteringLog(level: .info, message: "cutoff lifted: the limit changed", callID: callID, userID: call.start.userID,
                                        connection: call.owner, details: [("scope", cutoff.scope.rawValue)])))
        actions.append(.markCall(userID: call.start.userID, callID: callID, status: "active", cutoffReason: nil))
    }
}

/// One live call as the core sees it: what the simulation's invariants and tests read.
public struct CallAudit: Sendable {
    public var callID: String
    public var userID: String
    /// `admitting`, `active`, `closing` or `ending`.
    public var phase: String
    public var policy: BudgetPolicy
    /// The call's spend and its user's spend in the current day and month, as this core knows them.
    public var spent: (call: ExactDecimal, day: ExactDecimal, month: ExactDecimal)
    public var cutoff: BudgetScope?
    public var highestAckedSeq: Int64
}

extension MeteringCore {
    /// The live calls, by call id.
    public func audit() -> [CallAudit] {
        calls.sorted { $0.key < $1.key }.map { callID, call in
            let phase = switch call.phase {
            case .admitting: "admitting"
            case .active: "active"
            case .closing: "closing"
            case .ending: "ending"
            }
            guard let user = users[call.start.userID] else {
                return CallAudit(callID: callID, userID: call.start.userID, phase: phase, policy: settings.defaults,
                                 spent: (call.spent, .zero, .zero), cutoff: call.cutoff?.scope, highestAckedSeq: call.highestAckedSeq)
            }
            return CallAudit(callID: callID, userID: call.start.userID, phase: phase, policy: user.policy,
                             spent: (call.spent, user.day.spent, user.month.spent), cutoff: call.cutoff?.scope,
                             highestAckedSeq: call.highestAckedSeq)
        }
    }
}
