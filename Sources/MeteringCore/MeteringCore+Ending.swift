import VoiceMeterDomain

/// `call.end` and the end of a call: it ends once every frame sent before it is settled, then is
/// summarized and forgotten.
extension MeteringCore {
    mutating func callEnded(_ end: CallEnd, _ connection: ClientConnection, _ input: MeteringInput, _ actions: inout [MeteringAction]) {
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
    mutating func mayRecordUnknownCallFrame(from connection: ClientConnection) -> Bool {
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
    func refuseNotOwner(_ callID: String, seq: Int64?, _ connection: ClientConnection, _ actions: inout [MeteringAction]) -> Bool {
        actions.append(.send(.error(ProtocolError(.unknownCall, "this connection has not started or resumed this call; send call.start on it first",
                                                  callID: callID, seq: seq)), to: connection))
        return true
    }

    /// Ends a closing call once no frame refused transiently is still expected.
    mutating func endIfSettled(_ callID: String, _ actions: inout [MeteringAction]) {
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
