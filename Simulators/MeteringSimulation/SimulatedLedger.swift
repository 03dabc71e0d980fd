import MeteringCore
import VoiceMeterDomain

/// PostgreSQL as metering sees it, in memory: calls and their registrations, events keyed by
/// `(call_id, seq)`, endings, frames refused for good, and users' settings. Its rules are the
/// SQL's (`CallStore`, `EventStore`, `BudgetStore`), so the core meets the same answers here.
struct SimulatedLedger {
    struct Event {
        var userID: String
        var hash: PayloadHash
        var cost: ExactDecimal?
        var service: String
        var occurredAt: Timestamp
        /// Whether the call had ended when the event was stored (it never should).
        var afterEnd: Bool
    }

    struct Call {
        var userID: String
        var startedAt: Timestamp
        var status: String
        var ended = false
        var registrations: Int64 = 1
    }

    var calls: [String: Call] = [:]
    var events: [EventKey: Event] = [:]
    var refused: [String: [Int64: String]] = [:]
    var settings: [String: BudgetSettings] = [:]
    /// Events stored while their call was `rejected` (an admission bypassed).
    var eventsOfRejectedCalls: [EventKey] = []
    /// `budget_grants`: by user, then holder.
    var grants: [String: [String: (amount: ExactDecimal, expiresAt: Timestamp)]] = [:]

    /// `CallStore.register` and `BudgetStore.snapshot`.
    mutating func register(_ start: CallStart, startedAt: Timestamp, asOf: Timestamp) -> (CallRegistration, UserBudgetSnapshot) {
        var isNew = false
        let inserted = calls[start.callID] == nil
        if inserted {
            calls[start.callID] = Call(userID: start.userID, startedAt: startedAt, status: "active")
            isNew = true
        }
        var call = calls[start.callID]!
        guard call.userID == start.userID else { return (.belongsToAnotherUser, snapshot(start.userID, asOf: asOf)) }
        if call.status == "rejected" {
            call.status = "active"
            call.startedAt = startedAt
            isNew = true
        }
        guard !call.ended else { return (.ended, snapshot(start.userID, asOf: asOf)) }
        if !inserted { call.registrations += 1 }
        calls[start.callID] = call
        let committed = events.filter { $0.key.callID == start.callID }.sorted { $0.key.seq < $1.key.seq }.map { key, event in
            CommittedEvent(stored: StoredUsageEvent(seq: key.seq, usage: MeteredUsage(service: event.service, operation: "op", unit: .requests,
                                                                                      amount: .zero, occurredAt: event.occurredAt),
                                                    priceID: nil),
                           totalCost: event.cost, payloadHash: event.hash)
        }
        return (.registered(RegisteredCall(userID: start.userID, isNew: isNew, startedAt: call.startedAt, committedEvents: committed,
                                           refusedFrames: refused[start.callID] ?? [:], generation: call.registrations)),
                snapshot(start.userID, asOf: asOf))
    }

    /// The user's settings and committed spend in the UTC day and month containing `asOf`.
    func snapshot(_ userID: String, asOf: Timestamp) -> UserBudgetSnapshot {
        var day = ExactDecimal.zero
        var month = ExactDecimal.zero
        for event in events.values where event.userID == userID {
            guard let cost = event.cost else { continue }
            if event.occurredAt.startOfDay == asOf.startOfDay { day = (try? day.adding(cost)) ?? day }
            if event.occurredAt.startOfMonth == asOf.startOfMonth { month = (try? month.adding(cost)) ?? month }
        }
        return UserBudgetSnapshot(settings: settings[userID] ?? BudgetSettings(), daySpent: day, monthSpent: month)
    }

    /// `take_budget_grant` (Migrations/0016), with the database's clock at `now`.
    mutating func takeGrant(_ request: GrantRequest, holder: String, now: Timestamp) -> GrantAnswer {
        func sum(_ a: ExactDecimal, _ b: ExactDecimal) -> ExactDecimal { (try? a.adding(b)) ?? a }
        func difference(_ a: ExactDecimal, _ b: ExactDecimal) -> ExactDecimal { (try? a.subtracting(b)) ?? a }
        let all = grants[request.userID] ?? [:]
        var live = all.filter { $0.value.expiresAt > now }
        let heldBefore = live[holder] != nil
        let others = live.filter { $0.key != holder }.values.reduce(ExactDecimal.zero) { sum($0, $1.amount) }
        let stored = settings[request.userID] ?? BudgetSettings()
        let spent = snapshot(request.userID, asOf: request.asOf)
        let dayRoom = (stored.dayLimit ?? request.defaultDayLimit).map { difference(difference($0, spent.daySpent), others) }
        let monthRoom = (stored.monthLimit ?? request.defaultMonthLimit).map { difference(difference($0, spent.monthSpent), others) }
        let room: ExactDecimal? = switch (dayRoom, monthRoom) {
        case (let day?, let month?): min(day, month)
        case (let day?, nil): day
        case (nil, let month?): month
        case (nil, nil): nil
        }
        let keep = heldBefore || room == nil ? request.keep : min(request.keep, max(room!, .zero))
        var extra = room.map { min(request.want, max(difference($0, keep), .zero)) } ?? request.want
        if extra < request.minimum { extra = .zero }
        let shortScope: BudgetScope? = if extra >= request.want { nil }
            else if let dayRoom, monthRoom.map({ dayRoom <= $0 }) ?? true { .day } else { .month }
        let held = sum(keep, extra)
        live[holder] = held > .zero ? (held, now.adding(seconds: request.leaseSeconds)) : nil
        grants[request.userID] = live
        return GrantAnswer(held: held, extra: extra, daySpent: spent.daySpent, monthSpent: spent.monthSpent, othersHeld: others,
                           shortScope: shortScope, expired: all.count { $0.value.expiresAt <= now })
    }

    /// `BudgetStore.renewGrants`: the holder's grants of these users whose lease still runs at
    /// `now` are extended; their amounts do not change.
    mutating func renewGrants(_ renewal: GrantRenewal, holder: String, now: Timestamp) -> Set<String> {
        var renewed: Set<String> = []
        for userID in renewal.userIDs {
            guard let grant = grants[userID]?[holder], grant.expiresAt > now else { continue }
            grants[userID]?[holder] = (grant.amount, now.adding(seconds: renewal.leaseSeconds))
            renewed.insert(userID)
        }
        return renewed
    }

    /// What the unexpired grants of a user hold at `now`.
    func held(by userID: String, at now: Timestamp) -> ExactDecimal {
        (grants[userID] ?? [:]).values.filter { $0.expiresAt > now }.reduce(ExactDecimal.zero) { (try? $0.adding($1.amount)) ?? $0 }
    }

    /// `EventStore.commit` with the endings in the same transaction (`CallStore.end`).
    mutating func commit(_ batch: [UsageEvent], endings: [CallEnding]) -> LedgerCommit {
        var conflicts: Set<EventKey> = []
        for event in batch {
            if let stored = events[event.key] {
                if stored.hash != event.payloadHash { conflicts.insert(event.key) }
                continue
            }
            let call = calls[event.key.callID]
            if call?.status == "rejected" { eventsOfRejectedCalls.append(event.key) }
            let cost: ExactDecimal? = if case .priced(let priced) = event.pricing { priced.totalCost } else { nil }
            events[event.key] = Event(userID: event.userID, hash: event.payloadHash, cost: cost, service: event.usage.service,
                                      occurredAt: event.usage.occurredAt, afterEnd: call?.ended ?? false)
        }
        let ended = endings.map { ending -> EndedCall in
            guard var call = calls[ending.callID] else { return EndedCall(ending: ending, applied: false, costByService: []) }
            let correctsAbandon = call.status == "abandoned" && ending.status != "abandoned" && ending.onlyIfGeneration == nil
            let applies = (!call.ended || correctsAbandon) && (ending.onlyIfGeneration.map { $0 == call.registrations } ?? true)
            if applies {
                call.ended = true
                call.status = ending.status
                calls[ending.callID] = call
            }
            guard applies || ending.onlyIfGeneration == nil else { return EndedCall(ending: ending, applied: false, costByService: []) }
            return EndedCall(ending: ending, applied: applies, costByService: costByService(of: ending.callID))
        }
        return LedgerCommit(events: batch, conflicts: conflicts, endings: ended)
    }

    func costByService(of callID: String) -> [ServiceCost] {
        var byService: [String: ExactDecimal] = [:]
        for (key, event) in events where key.callID == callID {
            guard let cost = event.cost else { continue }
            byService[event.service] = (try? (byService[event.service] ?? .zero).adding(cost)) ?? cost
        }
        return byService.sorted { $0.key < $1.key }.map { ServiceCost(service: $0.key, cost: $0.value) }
    }

    func cost(of callID: String) -> ExactDecimal {
        costByService(of: callID).reduce(ExactDecimal.zero) { (try? $0.adding($1.cost)) ?? $0 }
    }

    /// `BudgetStore.markCall`.
    mutating func mark(_ callID: String, status: String, onlyIfGeneration: Int64? = nil) {
        guard var call = calls[callID], !call.ended, onlyIfGeneration.map({ $0 == call.registrations }) ?? true else { return }
        call.status = status
        calls[callID] = call
    }
}
