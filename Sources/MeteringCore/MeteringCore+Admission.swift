import VoiceMeterDomain

/// `call.start`: a new call is registered in the ledger and admitted against its user's budget
/// (reserving its expected cost in the user's grant); a resumed one is rebuilt from what the
/// ledger holds. Messages of a call wait while it is admitted.
extension MeteringCore {
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
    mutating func connectionClosed(_ connection: ClientConnection, _ actions: inout [MeteringAction]) {
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
                case .callEnd(_, connection), .refusedAtDecoding(_, connection): break
                default: kept.append(input)
                }
            }
            calls.values[index].phase = .admitting(queued: kept)
        }
    }

    mutating func registrationFailed(_ callID: String, _ reason: String, _ actions: inout [MeteringAction]) {
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
        for input in queued {
            switch input {
            case .usage(let frame, _, let connection):
                actions.append(.frameHandled(callID: callID))
                actions.append(.send(.error(ProtocolError(frames.0, frames.1, callID: callID, seq: frame.seq)), to: connection))
            case .refusedAtDecoding(let error, let connection):
                actions.append(.send(.error(ProtocolError(frames.0, frames.1, callID: callID, seq: error.seq)), to: connection))
            default: break
            }
        }
    }

    mutating func registered(_ callID: String, _ registration: CallRegistration, _ snapshot: UserBudgetSnapshot, asOf: Timestamp,
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
    func replay(_ registered: RegisteredCall, into call: inout LiveCall) {
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

    func accept(_ callID: String, _ actions: inout [MeteringAction]) {
        guard let call = calls[callID], let owner = call.owner, let user = users[call.start.userID] else { return }
        actions.append(.send(.callAccepted(callID: callID, callLimit: user.policy.callLimit ?? .zero, monthSpent: user.month.spent,
                                           monthLimit: user.policy.monthLimit ?? .zero), to: owner))
        if call.highestAckedSeq > 0 { actions.append(.send(.ack(callID: callID, seq: call.highestAckedSeq), to: owner)) }
        if let cutoff = call.cutoff {
            actions.append(.send(.budgetCutoff(callID: callID, scope: cutoff.scope, spent: cutoff.spent, limit: cutoff.limit), to: owner))
        }
    }

    /// `nil` when a new call's start lies in the window around the server's clock, else the error text.
    func startWindowViolation(_ startedAt: Timestamp) -> String? {
        let earliest = now.adding(seconds: -settings.callStartPastSeconds)
        let latest = now.adding(seconds: settings.clockSkewSeconds)
        guard startedAt < earliest || startedAt > latest else { return nil }
        return "call.start ts \(startedAt) is outside \(earliest) … \(latest) (the server's clock minus \(settings.callStartPastSeconds) s to plus \(settings.clockSkewSeconds) s); send the call's real start"
    }
}
