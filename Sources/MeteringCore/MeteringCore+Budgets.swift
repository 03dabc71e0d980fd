import VoiceMeterDomain

extension MeteringCore {
    // MARK: Spend and signals

    /// Adds a frame's cost to its call and user (in the periods of its `ts`) and acts on every budget it crosses.
    mutating func charge(_ cost: ExactDecimal, at instant: Timestamp, toCallAt index: Dictionary<String, LiveCall>.Index,
                         _ actions: inout [MeteringAction]) {
        let callID = calls.keys[index]
        let userID = calls.values[index].start.userID
        guard let userIndex = users.index(forKey: userID) else { return }
        calls.values[index].spent += cost
        users.values[userIndex].day.charge(cost, at: instant, now: now)
        users.values[userIndex].month.charge(cost, at: instant, now: now)
        let policy = users.values[userIndex].policy
        let callSignals = calls.values[index].budget.check(spent: calls.values[index].spent, policy: policy)
        let daySignals = users.values[userIndex].day.meter.check(spent: users.values[userIndex].day.spent, policy: policy)
        let monthSignals = users.values[userIndex].month.meter.check(spent: users.values[userIndex].month.spent, policy: policy)
        // Nearly every frame crosses nothing: no signal arrays joined.
        guard !callSignals.isEmpty || !daySignals.isEmpty || !monthSignals.isEmpty else { return }
        for signal in callSignals + daySignals + monthSignals { act(on: signal, userID: userID, callID: callID, &actions) }
    }

    private mutating func act(on signal: BudgetSignal, userID: String, callID: String, _ actions: inout [MeteringAction]) {
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
        guard let call = calls[callID], call.cutoff == nil, let user = users[call.start.userID], user.policy.autoCutoff else { return }
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
        for index in calls.indices where calls.values[index].streamingAfterCutoff {
            calls.values[index].streamingAfterCutoff = false
            if let owner = calls.values[index].owner, let cutoff = calls.values[index].cutoff {
                actions.append(.send(.budgetCutoff(callID: calls.keys[index], scope: cutoff.scope, spent: cutoff.spent, limit: cutoff.limit), to: owner))
            }
        }
        let silentSince = now.adding(seconds: -settings.abandonAfterSeconds)
        for (callID, call) in calls.sorted(by: { $0.key < $1.key }) where call.lastMessageAt <= silentSince {
            switch call.phase {
            // Only a copy that still has its connection ends the call outright; a copy whose
            // connection closed may be stale (the call moved on), so its ending is conditional.
            case .active: finish(callID, endedAt: call.lastMessageAt, status: "abandoned", conditional: call.owner == nil, &actions)
            // The refused frames never came back: the call ends with what was stored.
            case .closing(let endedAt): finish(callID, endedAt: endedAt, status: call.endStatus, &actions)
            case .admitting, .ending: break
            }
        }
        warnOfProjectedExhaustion(&actions)
        if settings.evaluatesPlatformQuotas { actions.append(.evaluateQuotas(asOf: now)) }
        if !users.isEmpty { actions.append(.refreshBudgets(userIDs: users.keys.sorted(), asOf: now, paced: true)) }
    }

    /// Beyond the seed: a call whose per-call limit will be exhausted before the next tick at its
    /// current burn rate is warned once, with the projected time.
    private mutating func warnOfProjectedExhaustion(_ actions: inout [MeteringAction]) {
        for index in calls.indices where calls.values[index].cutoff == nil && !calls.values[index].projectionWarned {
            let call = calls.values[index]
            guard case .active = call.phase, let limit = users[call.start.userID]?.policy.callLimit,
                  let at = BurnProjection.exhaustsWithin(horizonSeconds: Int64(settings.tickSeconds), spent: call.spent,
                                                         limit: limit, since: call.startedAt, now: now)
            else { continue }
            calls.values[index].projectionWarned = true
            actions.append(.recordAlert(CostAlert(type: "projected_exhaustion", scope: "call", userID: call.start.userID, callID: calls.keys[index],
                                                  spent: call.spent, limit: limit, percent: nil,
                                                  message: "at its burn rate the call reaches its \(limit) USD limit at \(at)")))
        }
    }

    /// Takes fresh settings and committed spend. Limits are live: a changed limit starts its
    /// meters over (a raised limit cuts off again when it is reached), lifts cutoffs it no longer
    /// justifies, and cuts off calls it now does.
    mutating func budgetsRefreshed(_ snapshots: [String: UserBudgetSnapshot], asOf: Timestamp, _ actions: inout [MeteringAction]) {
        for (userID, snapshot) in snapshots.sorted(by: { $0.key < $1.key }) {
            guard let userIndex = users.index(forKey: userID) else { continue }
            users.values[userIndex].policy = snapshot.settings.policy(over: settings.defaults)
            users.values[userIndex].day.refresh(committed: snapshot.daySpent, asOf: asOf)
            users.values[userIndex].month.refresh(committed: snapshot.monthSpent, asOf: asOf)
            let user = users.values[userIndex]
            for callID in user.calls.sorted() { liftUnjustifiedCutoff(callID, user: user, &actions) }
            // New settings may put a running call over its own limit too.
            for callID in user.calls.sorted() {
                guard let index = calls.index(forKey: callID), !calls.values[index].isAdmitting else { continue }
                let signals = calls.values[index].budget.check(spent: calls.values[index].spent, policy: user.policy)
                for signal in signals { act(on: signal, userID: userID, callID: callID, &actions) }
            }
            let daySignals = users.values[userIndex].day.meter.check(spent: user.day.spent, policy: user.policy)
            let monthSignals = users.values[userIndex].month.meter.check(spent: user.month.spent, policy: user.policy)
            guard let anyCall = user.calls.sorted().first(where: { calls[$0]?.isAdmitting == false }) else { continue }
            for signal in daySignals + monthSignals { act(on: signal, userID: userID, callID: anyCall, &actions) }
        }
    }

    /// A cutoff whose limit was raised or cleared (or auto-cutoff turned off) no longer holds:
    /// it is not re-sent, and the call ends `completed` unless it is cut off again.
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
