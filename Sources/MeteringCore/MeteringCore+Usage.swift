import VoiceMeterDomain

/// Usage frames: checked (owner, resend, refusal for good, window, cost bound, grant), priced and
/// handed to the ledger writer; frames the decoder refused settle their seq here.
extension MeteringCore {
    /// Where a frame of a call stands, from its call id and seq alone (so a frame the decoder
    /// refused goes the same way as one it read).
    enum FrameGate {
        /// No call of that id here: `unknown_call` was sent.
        case unknownCall
        /// Answered already: another connection carries the call, or the call has ended.
        case answered
        /// The call is being admitted: the frame waits in its queue.
        case admitting(LiveCall)
        /// To be handled; `closing`: the call has ended and waits for this seq.
        case open(LiveCall, closing: Bool)
    }

    /// Only the connection carrying a call speaks for it; after `call.end` only the frames it
    /// waits for are taken, and resends of frames already taken.
    mutating func gate(_ callID: String, seq: Int64, _ connection: ClientConnection, _ actions: inout [MeteringAction]) -> FrameGate {
        guard let call = calls[callID] else {
            actions.append(.send(.error(ProtocolError(.unknownCall, Self.noCallStart, callID: callID, seq: seq)), to: connection))
            return .unknownCall
        }
        guard call.owner == connection else {
            refuseNotOwner(callID, seq: seq, connection, &actions)
            return .answered
        }
        if call.isAdmitting { return .admitting(call) }
        call.lastMessageAt = now
        switch call.phase {
        case .admitting, .active: return .open(call, closing: false)
        case .closing where call.refusedSeqs.contains(seq) || call.acceptedHashes[seq] != nil: return .open(call, closing: true)
        // A resend of a frame taken before the end (it may still be on its way): answered as a resend.
        case .ending where call.acceptedHashes[seq] != nil: return .open(call, closing: false)
        case .closing, .ending:
            actions.append(.send(.error(ProtocolError(.unknownCall, Self.callHasEnded, callID: callID, seq: seq)), to: connection))
            return .answered
        }
    }

    /// Handles a frame; `false` when it waits for its call's admission (it is handled later).
    @discardableResult
    mutating func usage(_ frame: UsageFrame, _ hash: PayloadHash, _ connection: ClientConnection, _ actions: inout [MeteringAction]) -> Bool {
        let call: LiveCall
        let closing: Bool
        switch gate(frame.callID, seq: frame.seq, connection, &actions) {
        case .unknownCall:
            actions.append(mayRecordUnknownCallFrame(from: connection) ? .recordRejectedFrame(frame, reason: .unknownCall) : .count(.rejectedFrameNotRecorded))
            return true
        case .answered: return true
        case .admitting(let waiting):
            waiting.queue(.usage(frame, hash: hash, from: connection))
            return false
        case .open(let open, let isClosing):
            call = open
            closing = isClosing
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
    mutating func refuseForGood(_ frame: UsageFrame, _ reason: RejectedFrameReason, _ message: String, call: LiveCall,
                                        closing: Bool, _ connection: ClientConnection, _ actions: inout [MeteringAction]) {
        actions.append(.send(.error(ProtocolError(reason.errorCode, message, callID: frame.callID, seq: frame.seq)), to: connection))
        actions.append(.recordRejectedFrame(frame, reason: reason))
        settleRefused(frame.seq, reason, call: call, closing: closing, &actions)
    }

    mutating func settleRefused(_ seq: Int64, _ reason: RejectedFrameReason, call: LiveCall, closing: Bool, _ actions: inout [MeteringAction]) {
        call.refusedForGood[seq] = reason
        call.refusedSeqs.remove(seq)
        call.settled.settle(seq)
        acknowledge(call, &actions)
        if closing { endIfSettled(call.start.callID, &actions) }
    }

    /// A usage frame the decoder refused for good (named by call and seq) goes the way of any
    /// frame of its call: carried by this connection, its error is sent, its seq kept (so the call
    /// settles it wherever it resumes) and settled; otherwise it gets the answer any frame would
    /// (`unknown_call`, or `overloaded` when its call's admission fails), and the sender sends it again.
    mutating func refusedAtDecoding(_ error: ProtocolError, _ connection: ClientConnection, _ actions: inout [MeteringAction]) {
        guard let callID = error.callID, let seq = error.seq, let reason = RejectedFrameReason(decoding: error.code) else { return }
        switch gate(callID, seq: seq, connection, &actions) {
        case .unknownCall, .answered: return
        case .admitting(let call): call.queue(.refusedAtDecoding(error, from: connection))
        case .open(let call, let closing):
            actions.append(.send(.error(error), to: connection))
            guard call.acceptedHashes[seq] == nil, call.refusedForGood[seq] == nil, seq > call.settled.through else { return }
            actions.append(.recordUndecodedFrame(callID: callID, seq: seq, reason: reason, error: error))
            settleRefused(seq, reason, call: call, closing: closing, &actions)
        }
    }

    mutating func submitted(_ accepted: Bool, _ actions: inout [MeteringAction]) {
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
}
