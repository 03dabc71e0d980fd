import VoiceMeterDomain

extension MeteringCore {
    // MARK: Commits

    mutating func committed(_ commit: LedgerCommit, _ actions: inout [MeteringAction]) {
        // Each touched call is acknowledged once, after all the batch's events (a batch holds the
        // frames of many calls, interleaved): marked with the commit's number, no set of ids hashed.
        commitNumber &+= 1
        var touched: [LiveCall] = []
        for position in commit.events.indices {
            // Fields read in place: no copy of each event.
            let key = commit.events[position].key
            let hash = commit.events[position].payloadHash
            let occurredAt = commit.events[position].usage.occurredAt
            let conflicted = !commit.conflicts.isEmpty && commit.conflicts.contains(key)
            let cost: ExactDecimal? = if case .priced(let priced) = commit.events[position].pricing { priced.totalCost } else { nil }
            if let cost, let user = users[commit.events[position].userID] {
                user.day.settle(cost, at: occurredAt, stored: !conflicted)
                user.month.settle(cost, at: occurredAt, stored: !conflicted)
                user.grant?.settle(cost, stored: !conflicted)
            }
            guard let index = calls.index(forKey: key.callID) else { continue }
            let call = calls.values[index]
            // A copy that replaced the one that submitted the frame (a reconnect) did not take it:
            // stored, it is taken in now, as a resumed call takes in its stored events.
            var accepted = call.acceptedHashes[key.seq]
            if !conflicted && accepted == nil {
                call.acceptedHashes[key.seq] = hash
                accepted = hash
                if case .priced(let priced) = commit.events[position].pricing {
                    if let version = prices.version(id: priced.priceID) { _ = call.meter.price(commit.events[position].usage, with: version) }
                    call.spent += priced.totalCost
                }
            }
            let taken = accepted == hash
            // Stored now, or stored with other content by another node (that seq is taken): settled either way.
            call.settled.settle(key.seq)
            if conflicted && taken {
                // Not this frame: its spend comes off the call, and its resend is a conflict again.
                call.acceptedHashes[key.seq] = nil
                if let cost { call.spent -= cost }
                if let owner = call.owner {
                    actions.append(.send(.error(ProtocolError(.seqConflict, "seq \(key.seq) is stored with different content",
                                                              callID: key.callID, seq: key.seq)), to: owner))
                }
            }
            if call.lastCommit != commitNumber {
                call.lastCommit = commitNumber
                touched.append(call)
            }
        }
        for call in touched { acknowledge(call, &actions) }
        for ended in commit.endings { summarize(ended, &actions) }
    }

    /// Sends the cumulative ack: the unbroken run of settled seqs, when it moved.
    func acknowledge(_ call: LiveCall, _ actions: inout [MeteringAction]) {
        guard !call.isAdmitting else { return }
        let ack = call.settled.through
        guard ack > call.highestAckedSeq else { return }
        call.highestAckedSeq = ack
        if let owner = call.owner { actions.append(.send(.ack(callID: call.start.callID, seq: ack), to: owner)) }
    }

    /// The ledger refused an event outright (a data error): tell the sender, forget the frame.
    mutating func refusedByLedger(_ event: UsageEvent, _ reason: String, _ actions: inout [MeteringAction]) {
        let cost: ExactDecimal? = if case .priced(let priced) = event.pricing { priced.totalCost } else { nil }
        if let cost, let user = users[event.userID] {
            user.day.settle(cost, at: event.usage.occurredAt, stored: false)
            user.month.settle(cost, at: event.usage.occurredAt, stored: false)
            user.grant?.settle(cost, stored: false)
        }
        guard let call = calls[event.key.callID], call.acceptedHashes[event.key.seq] == event.payloadHash else { return }
        call.acceptedHashes[event.key.seq] = nil
        if let cost { call.spent -= cost }
        call.settled.settle(event.key.seq)
        let frame = UsageFrame(callID: event.key.callID, seq: event.key.seq, usage: event.usage, externalID: event.externalID,
                               metadataJSON: event.metadataJSON)
        actions.append(.recordRejectedFrame(frame, reason: .ledgerRefused))
        call.refusedForGood[event.key.seq] = .ledgerRefused
        if let owner = call.owner {
            actions.append(.send(.error(ProtocolError(.internal, "the ledger could not store this frame; it was not counted",
                                                      callID: event.key.callID, seq: event.key.seq)), to: owner))
        }
        acknowledge(call, &actions)
    }

    /// A call's ending is stored: its summary (the ledger's figures) goes to its connection.
    private mutating func summarize(_ ended: EndedCall, _ actions: inout [MeteringAction]) {
        let callID = ended.ending.callID
        guard let call = calls[callID], case .ending = call.phase else { return }
        forget(callID, &actions)
        // A stale copy's ending that did not apply: the call lives on elsewhere. A sender that
        // attached meanwhile (its call.start was held for the ending) resumes it from the ledger.
        guard ended.applied || ended.ending.onlyIfGeneration == nil else {
            if let owner = call.owner { callStarted(call.start, owner, &actions) }
            return
        }
        guard let owner = call.owner else { return }
        let cost = ended.costByService.reduce(ExactDecimal.zero) { $0 + $1.cost }
        var fee: ExactDecimal?
        var margin: ExactDecimal?
        if let revenue = call.start.revenue {
            if let payment = prices.price(service: "stripe", operation: "payment", model: call.start.paymentMethod,
                                          unit: .transactions, at: call.startedAt) {
                fee = PaymentFee.fee(forCharge: revenue, version: payment)
            }
            margin = try? revenue.subtracting(cost).subtracting(fee ?? .zero)
        }
        actions.append(.send(.callSummary(callID: callID, cost: cost, byService: ended.costByService.map { (service: $0.service, cost: $0.cost) },
                                          revenue: call.start.revenue, paymentFee: fee, margin: margin), to: owner))
    }
}
