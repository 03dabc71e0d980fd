import Foundation
import Logging
import VoiceMeterCrypto
import VoiceMeterDomain
import VoiceMeterStore
import WebSocketTransport

/// Where metering sends messages and which services it uses; implemented by the composition root.
protocol MeteringEnvironment: Sendable {
    var prices: PriceBookWatcher { get }
    var writers: LedgerWriters { get }
    var registry: CallRegistry { get }
    func send(_ message: ServerMessage, to connection: ConnectionID)
    var defaultCallLimit: ExactDecimal { get }
    var defaultMonthLimit: ExactDecimal { get }
}

/// The live ledger of the calls it owns, on its own Dispatch queue: admission at `call.start`,
/// pricing of every frame, acknowledgements after commit, `call.summary` after `call.end`.
actor MeteringShard {
    private struct LiveCall {
        /// While `call.start` is being registered, later messages of the call wait in order.
        enum Phase { case admitting(queued: [(ClientMessage, ConnectionID)]), active, ending }
        var start: CallStart
        var phase: Phase
        var owner: ConnectionID?
        var startedAt = Timestamp(microsecondsSinceEpoch: 0)
        var meter = CallBillingMeter()
        /// Payload hashes of every frame accepted so far (committed or in flight), by seq.
        var acceptedHashes: [Int64: [UInt8]] = [:]
        /// Committed cost per service.
        var costByService: [String: ExactDecimal] = [:]
        var highestAckedSeq: Int64 = 0
    }

    private let executor: DispatchSerialExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    private let environment: any MeteringEnvironment
    private let logger: Logger
    private var calls: [String: LiveCall] = [:]

    init(index: Int, environment: any MeteringEnvironment, logger: Logger) {
        self.executor = DispatchSerialExecutor(label: "voicemeter.metering.\(index)")
        self.environment = environment
        self.logger = logger
    }

    /// Runs `body` on the shard's queue without creating a task (called from other threads).
    nonisolated func perform(_ body: @escaping @Sendable (isolated MeteringShard) -> Void) {
        executor.queue.async { self.assumeIsolated { body($0) } }
    }

    /// Returns once everything queued on the shard before this call has run.
    nonisolated func barrier() {
        executor.queue.sync {}
    }

    // MARK: Client messages

    func handle(_ message: ClientMessage, from connection: ConnectionID) {
        if case .admitting(var queued) = calls[message.callID]?.phase {
            if case .callStart = message {} else {
                queued.append((message, connection))
                calls[message.callID]?.phase = .admitting(queued: queued)
                return
            }
        }
        defer { if case .usage = message { environment.writers.writer(for: message.callID).noteHandled() } }
        switch message {
        case .callStart(let start): callStarted(start, connection)
        case .usage(let frame): usage(frame, connection)
        case .callEnd(let end): callEnded(end, connection)
        }
    }

    func connectionClosed(_ connection: ConnectionID) {
        for (callID, call) in calls where call.owner == connection { calls[callID]?.owner = nil }
    }

    private func callStarted(_ start: CallStart, _ connection: ConnectionID) {
        if let existing = calls[start.callID] {
            guard existing.start.userID == start.userID else {
                environment.send(.callRejected(callID: start.callID, reason: "duplicate_call", spent: nil, limit: nil), to: connection)
                return
            }
            // A reconnect resumes the call on the new connection: no second admission.
            calls[start.callID]?.owner = connection
            if case .active = existing.phase { accept(start.callID) }
            return
        }
        calls[start.callID] = LiveCall(start: start, phase: .admitting(queued: []), owner: connection)
        let startedAt = start.startedAt ?? .now
        environment.registry.register(start, startedAt: startedAt) { [self] outcome in
            self.perform { shard in shard.registered(start.callID, outcome) }
        }
    }

    private func registered(_ callID: String, _ outcome: Result<CallRegistration, any Error>) {
        guard var call = calls[callID], case .admitting(let queued) = call.phase else { return }
        let dropQueued = {
            for case (.usage, _) in queued { self.environment.writers.writer(for: callID).noteHandled() }
        }
        switch outcome {
        case .failure(let error):
            logger.warning("call registration failed", metadata: ["call.id": "\(callID)", "error": "\(error)"])
            calls[callID] = nil
            dropQueued()
            if let owner = call.owner {
                environment.send(.error(ProtocolError(.overloaded, "the database is unavailable; send call.start again shortly", callID: callID)), to: owner)
            }
        case .success(.belongsToAnotherUser):
            calls[callID] = nil
            dropQueued()
            if let owner = call.owner {
                environment.send(.callRejected(callID: callID, reason: "duplicate_call", spent: nil, limit: nil), to: owner)
            }
        case .success(.registered(let registered)):
            call.startedAt = registered.startedAt
            call.phase = .active
            let book = environment.prices.book
            for committed in registered.committedEvents {
                call.acceptedHashes[committed.stored.seq] = committed.payloadHash
                call.highestAckedSeq = max(call.highestAckedSeq, committed.stored.seq)
                if let priceID = committed.stored.priceID, let version = book.version(id: priceID) {
                    _ = call.meter.price(committed.stored.usage, with: version)
                }
                if let cost = committed.totalCost {
                    call.costByService[committed.stored.usage.service] = (try? (call.costByService[committed.stored.usage.service] ?? .zero).adding(cost)) ?? cost
                }
            }
            calls[callID] = call
            accept(callID)
            for (message, connection) in queued { handle(message, from: connection) }
        }
    }

    private func accept(_ callID: String) {
        guard let call = calls[callID], let owner = call.owner else { return }
        environment.send(.callAccepted(callID: callID, callLimit: environment.defaultCallLimit, monthSpent: .zero,
                                       monthLimit: environment.defaultMonthLimit), to: owner)
        if call.highestAckedSeq > 0 { environment.send(.ack(callID: callID, seq: call.highestAckedSeq), to: owner) }
    }

    private func usage(_ frame: UsageFrame, _ connection: ConnectionID) {
        guard var call = calls[frame.callID] else {
            environment.send(.error(ProtocolError(.unknownCall, "no call.start was seen for this call_id on this server; send call.start first",
                                                  callID: frame.callID, seq: frame.seq)), to: connection)
            return
        }
        call.owner = connection
        let hash = SHA256.digest(frame.canonicalContent)
        if let seen = call.acceptedHashes[frame.seq] {
            calls[frame.callID] = call
            if seen != hash {
                environment.send(.error(ProtocolError(.seqConflict, "seq \(frame.seq) was already used for different content",
                                                      callID: frame.callID, seq: frame.seq)), to: connection)
            } else if frame.seq <= call.highestAckedSeq {
                environment.send(.ack(callID: frame.callID, seq: call.highestAckedSeq), to: connection)
            }
            return
        }
        var priced = call.meter
        let event = UsageEvent(
            key: EventKey(callID: frame.callID, seq: frame.seq), userID: call.start.userID, callStartedAt: call.startedAt,
            personaID: call.start.personaID, usage: frame.usage, pricing: priced.price(frame.usage, book: environment.prices.book),
            metadataJSON: frame.metadataJSON, externalID: frame.externalID, payloadHash: hash
        )
        guard environment.writers.writer(for: frame.callID).submit(event) else {
            calls[frame.callID] = call
            environment.send(.error(ProtocolError(.overloaded, "the ledger is behind; this frame was not taken, send it again shortly",
                                                  callID: frame.callID, seq: frame.seq)), to: connection)
            return
        }
        call.meter = priced
        call.acceptedHashes[frame.seq] = hash
        calls[frame.callID] = call
    }

    private func callEnded(_ end: CallEnd, _ connection: ConnectionID) {
        guard var call = calls[end.callID], case .active = call.phase else {
            environment.send(.error(ProtocolError(.unknownCall, "no active call with this call_id on this server", callID: end.callID)), to: connection)
            return
        }
        call.owner = connection
        call.phase = .ending
        calls[end.callID] = call
        environment.writers.writer(for: end.callID).submit(CallEnding(userID: call.start.userID, callID: end.callID, endedAt: end.endedAt ?? .now, status: "completed"))
    }

    // MARK: Commits

    func committed(_ batch: CommittedBatch) {
        var highest: [String: Int64] = [:]
        for event in batch.events {
            let key = event.key
            if batch.result.conflicts.contains(key) {
                calls[key.callID]?.acceptedHashes[key.seq] = nil
                if let owner = calls[key.callID]?.owner {
                    environment.send(.error(ProtocolError(.seqConflict, "seq \(key.seq) is stored with different content",
                                                          callID: key.callID, seq: key.seq)), to: owner)
                }
                continue
            }
            if batch.result.inserted.contains(key), case .priced(let priced) = event.pricing, calls[key.callID] != nil {
                let service = event.usage.service
                calls[key.callID]!.costByService[service] = (try? (calls[key.callID]!.costByService[service] ?? .zero).adding(priced.totalCost)) ?? priced.totalCost
            }
            highest[key.callID] = max(highest[key.callID] ?? 0, key.seq)
        }
        for (callID, seq) in highest {
            guard var call = calls[callID] else { continue }
            call.highestAckedSeq = max(call.highestAckedSeq, seq)
            calls[callID] = call
            if let owner = call.owner { environment.send(.ack(callID: callID, seq: call.highestAckedSeq), to: owner) }
        }
        for ending in batch.endings { summarize(ending.callID) }
    }

    private func summarize(_ callID: String) {
        guard let call = calls.removeValue(forKey: callID) else { return }
        let byService = call.costByService.sorted { $0.key < $1.key }.map { (service: $0.key, cost: $0.value) }
        let cost = byService.reduce(ExactDecimal.zero) { (try? $0.adding($1.cost)) ?? $0 }
        var fee: ExactDecimal?
        var margin: ExactDecimal?
        if let revenue = call.start.revenue {
            if let payment = environment.prices.book.price(service: "stripe", operation: "payment", model: call.start.paymentMethod,
                                                           unit: .transactions, at: call.startedAt) {
                fee = PaymentFee.fee(forCharge: revenue, version: payment)
            }
            margin = try? revenue.subtracting(cost).subtracting(fee ?? .zero)
        }
        guard let owner = call.owner else { return }
        environment.send(.callSummary(callID: callID, cost: cost, byService: byService, revenue: call.start.revenue,
                                      paymentFee: fee, margin: margin), to: owner)
    }
}
