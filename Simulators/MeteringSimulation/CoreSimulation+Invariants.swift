import MeteringCore
import VoiceMeterDomain

/// What must hold after every step, and at rest.
extension CoreSimulation {
    func violation(_ invariant: String, _ detail: String) -> InvariantViolation {
        InvariantViolation(seed: options.seed, step: step, invariant: invariant, detail: detail, steps: options.steps)
    }

    /// An ack for n: every seq ≤ n of the call is stored, or was refused for good.
    func checkAcknowledged(_ callID: String, through seq: Int64) throws {
        guard seq >= 1 else { return }
        for covered in 1...seq where ledger.events[EventKey(callID: callID, seq: covered)] == nil && ledger.refused[callID]?[covered] == nil {
            throw violation("no acknowledged frame is missing from the ledger", "\(callID): ack \(seq) covers seq \(covered), which is not stored")
        }
    }

    mutating func checkInvariants() throws {
        if let key = ledger.eventsOfRejectedCalls.first {
            throw violation("no admission is bypassed", "\(key) was stored for a call refused at admission")
        }
        if let (key, _) = ledger.events.first(where: { $0.value.afterEnd }) {
            throw violation("an ended call stays ended", "\(key) was stored after its call ended (\(String(describing: ledger.calls[key.callID])))")
        }
        // Every fifth step: a doubled spend stays doubled, and summing the ledger is the costly check.
        if step % 5 == 0 {
            try checkCallSpendIsBounded()
            try checkUserBudgetsHold()
            try checkGrantsAreHeld()
        }
        for (index, node) in nodes.enumerated() {
            for call in node.core.audit() where (call.phase == "active" || call.phase == "closing") && call.policy.autoCutoff && call.cutoff == nil {
                for (scope, spent) in [(BudgetScope.call, call.spent.call), (.day, call.spent.day), (.month, call.spent.month)] {
                    guard let limit = call.policy.limit(for: scope), limit > .zero ? spent >= limit : spent > .zero else { continue }
                    throw violation("a call over a limit with auto-cutoff is cut off",
                                    "node \(index): \(call.callID) of \(call.userID) has \(scope.rawValue) spend \(spent) at its \(limit) limit and no cutoff")
                }
            }
        }
    }

    /// After the run settles: every summary still equals its call's events (nothing was stored after it).
    static func callID(of message: ServerMessage) -> String? {
        switch message {
        case .callAccepted(let id, _, _, _), .callRejected(let id, _, _, _), .ack(let id, _), .budgetWarning(let id, _, _, _, _),
             .budgetCutoff(let id, _, _, _), .callSummary(let id, _, _, _, _, _): id
        case .error(let error): error.callID
        }
    }

    /// A copy of a call never counts more spend than its frames stored or on their way to the
    /// ledger (a frame counted twice would cut a call off early).
    func checkCallSpendIsBounded() throws {
        let audits = nodes.map { $0.core.audit().filter { $0.spent.call > .zero } }
        guard audits.contains(where: { !$0.isEmpty }) else { return }
        var bound: [String: ExactDecimal] = [:]
        func add(_ cost: ExactDecimal, to callID: String) { bound[callID] = (try? bound[callID, default: .zero].adding(cost)) ?? cost }
        for (key, event) in ledger.events { if let cost = event.cost { add(cost, to: key.callID) } }
        for node in nodes {
            for case .event(let event) in node.writerQueue {
                if case .priced(let priced) = event.pricing { add(priced.totalCost, to: event.key.callID) }
            }
        }
        for (index, calls) in audits.enumerated() {
            for call in calls where call.spent.call > bound[call.callID, default: .zero] {
                throw violation("a call's spend counts each frame once",
                                "node \(index): \(call.callID) counts \(call.spent.call), its frames stored and on their way cost \(bound[call.callID, default: .zero])")
            }
        }
    }

    /// What a user's frames on their way to the ledger (in the nodes' writer queues) cost.
    func queuedSpend(of userID: String) -> ExactDecimal {
        var total = ExactDecimal.zero
        for node in nodes {
            for case .event(let event) in node.writerQueue where event.userID == userID {
                if case .priced(let priced) = event.pricing { total = (try? total.adding(priced.totalCost)) ?? total }
            }
        }
        return total
    }

    static func floorKey(_ userID: String, _ scope: BudgetScope, _ now: Timestamp) -> String {
        "\(userID) \(scope.rawValue) \(scope == .day ? now.startOfDay : now.startOfMonth)"
    }

    /// Raises the user's floors to what is committed, granted or on its way now.
    mutating func raiseSpendFloors(of userID: String) {
        let spent = ledger.snapshot(userID, asOf: now)
        let promised = (try? ledger.held(by: userID, at: now).adding(queuedSpend(of: userID))) ?? .zero
        for (scope, committed) in [(BudgetScope.day, spent.daySpent), (.month, spent.monthSpent)] {
            let key = Self.floorKey(userID, scope, now)
            let floor = (try? committed.adding(promised)) ?? committed
            spendFloors[key] = max(spendFloors[key] ?? .zero, floor)
        }
    }

    /// Committed day and month spend never passes the limit (or the floor under it) by more than
    /// a window of frames per call live at once and a frame per node: N nodes never spend N
    /// budgets. Spend not held by grants (auto-cutoff off, no limit, or a node that has not yet
    /// seen the user's limits) raises the floor instead.
    mutating func checkUserBudgetsHold() throws {
        let audits = nodes.map { (calls: Set($0.core.audit().map(\.userID)), grants: Set($0.core.grantAudit().map(\.userID))) }
        // Every core spends day and month budget of a user whose limits cut off through a grant.
        for (index, node) in nodes.enumerated() {
            for call in node.core.audit() where call.phase == "active" && call.policy.autoCutoff
                && (call.policy.dayLimit != nil || call.policy.monthLimit != nil) && !audits[index].grants.contains(call.userID) {
                throw violation("a user whose limits cut off spends through a grant", "node \(index): \(call.callID) of \(call.userID) is live without one")
            }
        }
        for user in (1...users).map({ "u\($0)" }) {
            let live = clients.count { $0.userID == user && $0.state == .active }
            liveCallsMax[user] = max(liveCallsMax[user] ?? 0, live)
            let policy = (ledger.settings[user] ?? BudgetSettings()).policy(over: settings.defaults)
            let heldByGrants = policy.autoCutoff && (policy.dayLimit != nil || policy.monthLimit != nil)
                && audits.allSatisfy { !$0.calls.contains(user) || $0.grants.contains(user) }
            guard heldByGrants else {
                raiseSpendFloors(of: user)
                continue
            }
            let spent = ledger.snapshot(user, asOf: now)
            let frames = clientWindow * (liveCallsMax[user] ?? 0) + nodes.count
            let allowance = (try? Self.frameCostMaximum.multiplied(by: ExactDecimal(frames))) ?? .zero
            for (scope, committed) in [(BudgetScope.day, spent.daySpent), (.month, spent.monthSpent)] {
                guard let limit = policy.limit(for: scope) else { continue }
                let bound = (try? max(limit, spendFloors[Self.floorKey(user, scope, now)] ?? .zero).adding(allowance)) ?? limit
                guard committed <= bound else {
                    throw violation("a user's day and month budget holds across nodes",
                                    "\(user) committed \(committed) in the \(scope.rawValue), limit \(limit), bound \(bound) (a window of frames for each of \(liveCallsMax[user] ?? 0) calls at once and one per node)")
                }
            }
        }
    }

    /// No grant is counted twice: while a core's lease lasts, the ledger holds at least what the
    /// core may still price plus its frames on their way.
    func checkGrantsAreHeld() throws {
        for (index, node) in nodes.enumerated() {
            for grant in node.core.grantAudit() where now < grant.validUntil {
                let holder = "node\(index)/\(node.life)"
                let row = ledger.grants[grant.userID]?[holder]
                let stored = row.flatMap { $0.expiresAt > now ? $0.amount : nil } ?? .zero
                let covered = (try? grant.inFlight.adding(grant.available)) ?? grant.inFlight
                guard stored >= covered else {
                    throw violation("a core spends only what the ledger holds for it",
                                    "node \(index): \(grant.userID) may price \(grant.available) with \(grant.inFlight) on its way; the ledger holds \(stored) for it")
                }
            }
        }
    }

    func checkAtRest() throws {
        for client in clients {
            guard let summary = client.summary else { continue }
            let stored = ledger.cost(of: client.callID)
            guard summary == stored else { throw violation("a summary equals its call's events", "\(client.callID): summary \(summary), ledger \(stored) at rest") }
        }
    }
}
