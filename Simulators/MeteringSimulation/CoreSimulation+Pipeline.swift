import MeteringCore
import VoiceMeterDomain

/// Each node performs its core's actions; each client (the pipeline's side) acts on what the server
/// sends, checking what it can see as it goes.
extension CoreSimulation {
    /// Feeds one input to a node's core and performs what it returns, as the shard would.
    mutating func feed(_ index: Int, _ input: MeteringInput) throws {
        trace?("step \(step) node \(index) ← \(Self.describe(input))")
        var actions = nodes[index].core.handle(input, at: now, prices: prices)
        var next = 0
        while next < actions.count {
            let action = actions[next]
            next += 1
            switch action {
            case .send(let message, let connection):
                trace?("  → \(connection): \(message.json)")
                if case .budgetCutoff = message { stats.cutoffs += 1 }
                if connections[connection.rawValue]?.node == index { connections[connection.rawValue]!.toClient.append(message) }
            case .submit(let event):
                let queued = nodes[index].writerQueue.count { if case .event = $0 { true } else { false } }
                let accepted = queued < Self.writerQueueEvents
                if accepted { nodes[index].writerQueue.append(.event(event)) } else { stats.overloaded += 1 }
                actions += nodes[index].core.handle(.submitted(accepted: accepted), at: now, prices: prices)
            case .submitEnding(let ending):
                nodes[index].writerQueue.append(.ending(ending))
                if case .tick = input { endedBySilence.insert(ending.callID) }
            case .register(let start, let startedAt, let asOf): nodes[index].registrations.append((start, startedAt, asOf))
            case .refreshBudgets(let users, let asOf, _): nodes[index].refreshes.append((users, asOf))
            case .takeGrant(let request): nodes[index].grantRequests.append(.take(request))
            case .renewGrants(let renewal): nodes[index].grantRequests.append(.renew(renewal))
            case .markCall(_, let callID, let status, _, let generation): ledger.mark(callID, status: status, onlyIfGeneration: generation)
            case .recordUndecodedFrame(let callID, let seq, let reason, _):
                if ledger.refused[callID]?[seq] == nil { ledger.refused[callID, default: [:]][seq] = reason.rawValue }
            case .recordRejectedFrame(let frame, let reason):
                if reason != .unknownCall, ledger.refused[frame.callID]?[frame.seq] == nil { ledger.refused[frame.callID, default: [:]][frame.seq] = reason.rawValue }
            case .recordAlert, .evaluateQuotas, .pinRoute, .forgetRoute, .frameHandled, .count, .log: break
            }
        }
    }

    // MARK: The pipeline's side

    mutating func receive(_ message: ServerMessage, client index: Int) throws {
        // An intruder's frames got their errors; anything else about another's call is a leak.
        if let callID = Self.callID(of: message), callID != clients[index].callID {
            guard case .error = message else {
                throw violation("only the connection that started or resumed a call hears about it",
                                "\(callID): \(message) reached the connection of \(clients[index].callID)")
            }
            return
        }
        switch message {
        case .callAccepted:
            if clients[index].state == .starting { clients[index].state = .active }
            clients[index].acceptedOn = clients[index].connection
            // Frames refused while the call was not started here are sent again, in seq order,
            // and then the end, if it was sent.
            if let id = clients[index].connection {
                for seq in clients[index].unacked.sorted() {
                    let message = usage(of: index, seq: seq, connection: id)
                    connections[id]?.toServer.append(message)
                }
                if clients[index].endSent {
                    connections[id]?.toServer.append(.callEnd(CallEnd(callID: clients[index].callID, endedAt: nil), from: ClientConnection(id)))
                }
            }
        case .callRejected:
            clients[index].state = .done
            stats.callsRejected += 1
            if let id = clients[index].connection { close(id) }
        case .ack(let callID, let seq):
            try checkAcknowledged(callID, through: seq)
            if seq < clients[index].highestAck {
                throw violation("acks never decrease", "\(callID): ack \(seq) after ack \(clients[index].highestAck)")
            }
            clients[index].highestAck = seq
            clients[index].unacked = clients[index].unacked.filter { $0 > seq }
        case .error(let error):
            guard let seq = error.seq else {
                // call.start did not go through (the database was away): send it again.
                if error.code == .overloaded { sendCallStartAgain(index) }
                return
            }
            switch error.code {
            case .overloaded, .rateLimited: break  // kept and sent again
            case .unknownCall:
                // The call was not started on this connection (its start failed): start it again.
                // Accepted here and ended, the call is over.
                if clients[index].endSent && clients[index].acceptedOn == clients[index].connection {
                    // Every frame is sent before call.end: the call ended without one it waited for.
                    if clients[index].unacked.contains(seq), ledger.events[EventKey(callID: clients[index].callID, seq: seq)] == nil,
                       !endedBySilence.contains(clients[index].callID) {
                        throw violation("a call ends only when its frames are settled", "\(clients[index].callID): seq \(seq), sent before call.end, was refused after it and is not stored")
                    }
                    clients[index].unacked.remove(seq)
                } else {
                    sendCallStartAgain(index)
                }
            default: clients[index].unacked.remove(seq)  // refused for good
            }
        case .budgetCutoff: clients[index].cutOff = true
        case .budgetWarning: break
        case .callSummary(let callID, let cost, _, _, _, _):
            let stored = ledger.cost(of: callID)
            guard cost == stored else { throw violation("a summary equals its call's events", "\(callID): summary \(cost), ledger \(stored)") }
            // Every frame was sent before call.end, and the summary follows their commit: acks
            // (and refusals for good) covered each one, or the sender would wait for them forever.
            // (A call ended by silence ends with what was stored: its missing frames never came. A
            // sender that reused a seq for other content had the copy refused, not the seq settled.)
            guard clients[index].unacked.isEmpty || endedBySilence.contains(callID) || clients[index].reusedASeq else {
                throw violation("a summarized call's frames are all acknowledged or refused", "\(callID): seqs \(clients[index].unacked.sorted()) unsettled")
            }
            clients[index].summary = cost
            clients[index].state = .done
            stats.callsSummarized += 1
            if let id = clients[index].connection { close(id) }
        }
    }

    mutating func sendCallStartAgain(_ index: Int) {
        guard let id = clients[index].connection, clients[index].state != .done else { return }
        let client = clients[index]
        connections[id]?.toServer.append(.callStart(CallStart(callID: client.callID, userID: client.userID, startedAt: client.startedAt),
                                                    from: ClientConnection(id)))
    }
}
