// VoiceMeterMetering: the executors of the pure MeteringCore (one shard per Dispatch queue), the
// routing of calls to shards, the call registry (registration, grants, budget reads on one queue
// and connection), the clock and the server's counters. It decides nothing itself (MeteringCore
// does), performs the core's actions through the ledger writers and the registry, and reaches
// clients only through the send function its environment gives it.

import Foundation
import Synchronization
import Logging
import MeteringCore
import VoiceMeterCrypto
import VoiceMeterDomain
import VoiceMeterLedger
import VoiceMeterStore
import WebSocketTransport

/// Where metering sends messages and which services it uses; implemented by the composition root.
package protocol MeteringEnvironment: Sendable {
    var prices: PriceBookWatcher { get }
    var writers: LedgerWriters { get }
    /// Told when metering is done with a usage frame the ingress counted.
    var backpressure: IngressBackpressure { get }
    var registry: CallRegistry { get }
    var router: CallRouter { get }
    var metering: MeteringSettings { get }
    /// Metering's time and tick timer (injected so tests control time).
    var clock: any MeteringClock { get }
    var metrics: ServerMetrics { get }
    /// This process as a holder of budget grants (each shard appends its index).
    var grantHolder: String { get }
    func send(_ message: ServerMessage, to connection: ConnectionID)
}

/// The executor of one `MeteringCore` on its own Dispatch queue: it feeds the core what happens
/// (client messages, registrations, commits, refreshes, the tick) with the clock's time and the
/// prices in force, and performs the actions the core returns. It decides nothing itself.
package actor MeteringShard {
    private let index: Int
    private let executor: DispatchSerialExecutor
    package nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    private let environment: any MeteringEnvironment
    private let logger: Logger
    private var core: MeteringCore
    /// The actions of the input being handled (their capacity kept from input to input).
    private var actions: [MeteringAction] = []
    /// The tick's timer, until the server stops. Its handler holds the shard strongly: a weak
    /// reference would move the shard's reference count to a side table and make every retain
    /// of it (several per frame) slower.
    private var tickTimer: (any MeteringTimer)?
    /// The canonical content of the frame being hashed (its capacity kept from frame to frame).
    private var canonicalContent: [UInt8] = []

    package init(index: Int, environment: any MeteringEnvironment, logger: Logger) {
        self.index = index
        self.executor = DispatchSerialExecutor(label: "voicemeter.metering.\(index)")
        self.environment = environment
        self.logger = logger
        var settings = environment.metering
        // Platform quotas are one set for the whole platform: the first shard evaluates them.
        settings.evaluatesPlatformQuotas = index == 0
        core = MeteringCore(settings: settings)
    }

    package typealias Work = @Sendable (isolated MeteringShard) -> Void

    /// Work handed in by other threads, run in order by one queue block per burst (a block per
    /// frame cost a Dispatch hop, and often a thread wake, for every frame).
    private struct Inbox: ~Copyable {
        var work: [Work] = []
        var drainScheduled = false
    }

    private let inbox = Mutex(Inbox())
    /// The drained array, kept for its capacity.
    private var draining: [Work] = []

    /// Runs `body` on the shard's queue without creating a task (called from other threads), in
    /// the order of the calls.
    package nonisolated func perform(_ body: @escaping Work) {
        let schedule = inbox.withLock { inbox in
            inbox.work.append(body)
            guard !inbox.drainScheduled else { return false }
            inbox.drainScheduled = true
            return true
        }
        if schedule { executor.queue.async { self.assumeIsolated { $0.drainInbox() } } }
    }

    /// Runs what the inbox holds; if more arrived meanwhile, runs it in a later block so timers
    /// and other blocks on the queue take their turn.
    private func drainInbox() {
        var batch: [Work] = []
        swap(&batch, &draining)
        let hasWork = inbox.withLock { inbox in
            swap(&inbox.work, &batch)
            if batch.isEmpty { inbox.drainScheduled = false }
            return !batch.isEmpty
        }
        guard hasWork else { return }
        for work in batch { work(self) }
        batch.removeAll(keepingCapacity: true)
        draining = batch
        let again = inbox.withLock { inbox in
            if inbox.work.isEmpty { inbox.drainScheduled = false }
            return inbox.drainScheduled
        }
        if again { executor.queue.async { self.assumeIsolated { $0.drainInbox() } } }
    }

    /// Returns once everything `perform` was given before this call has run.
    package nonisolated func barrier() {
        let done = DispatchSemaphore(value: 0)
        perform { _ in done.signal() }
        done.wait()
    }

    /// Starts the budget tick: every `tickSeconds` of the clock, on the shard's own queue.
    package nonisolated func startTicking() {
        perform { shard in
            shard.tickTimer = shard.environment.clock.repeating(every: shard.core.settings.tickSeconds, on: shard.executor.queue) {
                shard.assumeIsolated { $0.run(.tick) }
            }
        }
    }

    /// Stops the tick (the server is stopping), releasing the timer's hold on the shard.
    package nonisolated func stopTicking() {
        perform { shard in
            shard.tickTimer?.cancel()
            shard.tickTimer = nil
        }
    }

    // MARK: Inputs

    /// The call's ledger writer as the ingress chose it for the message being handled (a frame
    /// needs it twice: no second hash of its call id).
    private var messageWriter: (callID: String, writer: LedgerWriter)?

    private func writer(for callID: String) -> LedgerWriter {
        if let messageWriter, messageWriter.callID == callID { return messageWriter.writer }
        return environment.writers.writer(for: callID)
    }

    package func handle(_ message: ClientMessage, from connection: ConnectionID, writer: LedgerWriter) {
        messageWriter = (message.callID, writer)
        defer { messageWriter = nil }
        let client = ClientConnection(connection.rawValue)
        switch message {
        case .callStart(let start): run(.callStart(start, from: client))
        case .usage(let frame):
            frame.writeCanonicalContent(into: &canonicalContent)
            let done = core.handleUsage(frame, hash: PayloadHash(sha256Of: canonicalContent), from: client, at: environment.clock.now,
                                        prices: environment.prices.book, into: &actions)
            performActions()
            if done { environment.backpressure.frameHandled(for: writer) }
        case .callEnd(let end): run(.callEnd(end, from: client))
        }
    }

    package func connectionClosed(_ connection: ConnectionID) { run(.connectionClosed(ClientConnection(connection.rawValue))) }

    /// A frame of the call refused before metering saw it (`rate_limited`).
    package func refusedTransiently(callID: String, seq: Int64, from connection: ConnectionID) {
        run(.refusedTransiently(callID: callID, seq: seq, from: ClientConnection(connection.rawValue)))
    }

    package func refusedAtDecoding(_ error: ProtocolError, from connection: ConnectionID) {
        run(.refusedAtDecoding(error, from: ClientConnection(connection.rawValue)))
    }

    package func committed(_ batch: CommittedBatch) {
        run(.committed(LedgerCommit(events: batch.events, conflicts: batch.result.conflicts, endings: batch.endings)))
    }

    package func refused(_ event: UsageEvent, reason: String) { run(.refusedByLedger(event, reason: reason)) }

    /// The server stops: the budget grants go back (after the writers drained).
    package nonisolated func releaseGrants() { perform { $0.run(.releaseGrants) } }

    /// `user_budget_settings` changed: reload the users with live calls now.
    package func budgetSettingsChanged() { run(.budgetSettingsChanged) }

    /// Hands `input` to the core and performs what it returns, in order (a `submit` is answered
    /// at once, and what the core does with the answer is performed after it).
    private func run(_ input: MeteringInput) {
        core.handle(input, at: environment.clock.now, prices: environment.prices.book, into: &actions)
        performActions()
    }

    private func performActions() {
        var next = 0
        while next < actions.count {
            // Moved out, not copied (an event's strings are not retained again on the way).
            var action = MeteringAction.count(.unpricedEvent)
            swap(&action, &actions[next])
            next += 1
            execute(action)
        }
        actions.removeAll(keepingCapacity: true)
    }

    // MARK: Actions

    private func execute(_ action: MeteringAction) {
        switch action {
        case .send(let message, let connection):
            environment.send(message, to: ConnectionID(rawValue: connection.rawValue))
        case .submit(let event):
            let accepted = writer(for: event.key.callID).submit(event)
            core.answerSubmit(accepted: accepted, into: &actions)
        case .submitEnding(let ending):
            writer(for: ending.callID).submit(ending)
        case .register(let start, let startedAt, let asOf):
            environment.registry.register(start, startedAt: startedAt, at: asOf) { [self] outcome in
                self.perform { shard in
                    switch outcome {
                    case .success((let registration, let snapshot)): shard.run(.registered(callID: start.callID, registration, snapshot, asOf: asOf))
                    case .failure(let error): shard.run(.registrationFailed(callID: start.callID, reason: "\(error)"))
                    }
                }
            }
        case .refreshBudgets(let userIDs, let asOf, let paced): refresh(userIDs, asOf: asOf, paced: paced)
        case .takeGrant(let request): takeGrant(request)
        case .renewGrants(let renewal): renewGrants(renewal)
        case .recordAlert(let alert): environment.registry.record(alert)
        case .markCall(let userID, let callID, let status, let reason, let generation):
            environment.registry.markCall(userID: userID, callID: callID, status: status, cutoffReason: reason, onlyIfGeneration: generation)
        case .recordUndecodedFrame(let callID, let seq, let reason, let error):
            environment.registry.recordRejected(callID: callID, seq: seq, reason: reason.rawValue, payloadJSON: ServerMessage.error(error).json)
        case .recordRejectedFrame(let frame, let reason):
            environment.registry.recordRejected(callID: frame.callID, seq: frame.seq, reason: reason.rawValue, payloadJSON: frame.auditJSON)
        case .evaluateQuotas(let asOf): environment.registry.evaluateQuotas(at: asOf)
        case .pinRoute(let callID): environment.router.pin(callID, to: index)
        case .forgetRoute(let callID): environment.router.forget(callID)
        case .frameHandled(let callID): environment.backpressure.frameHandled(for: writer(for: callID))
        case .count(.unpricedEvent): environment.metrics.unpricedEvents.increment()
        case .count(.budgetCutoff): environment.metrics.budgetCutoffs.increment()
        case .count(.callRefusedForConnectionLimit): environment.metrics.callsRefusedForConnectionLimit.increment()
        case .count(.rejectedFrameNotRecorded): environment.metrics.rejectedFramesNotRecorded.increment()
        case .count(.frameRefusedForGrant): environment.metrics.framesRefusedForGrant.increment()
        case .log(let entry):
            var metadata: Logger.Metadata = ["call.id": "\(entry.callID)", "user.id": "\(entry.userID)",
                                             "conn.id": "\(entry.connection.map { "\($0.rawValue)" } ?? "none")"]
            for (key, value) in entry.details { metadata[key] = "\(value)" }
            switch entry.level {
            case .debug: logger.debug("\(entry.message)", metadata: metadata)
            case .info: logger.info("\(entry.message)", metadata: metadata)
            case .warning: logger.warning("\(entry.message)", metadata: metadata)
            }
        }
    }

    /// This core as a holder of budget grants.
    private var grantHolder: String { "\(environment.grantHolder)/core\(index)" }

    private func renewGrants(_ renewal: GrantRenewal) {
        let metrics = environment.metrics
        environment.registry.renewGrants(renewal, holder: grantHolder) { outcome in
            switch outcome {
            case .success(let renewed): self.perform { $0.run(.grantsRenewed(renewal, renewed: renewed)) }
            case .failure(let error):
                metrics.grantRequestsFailed.increment()
                self.perform { $0.run(.grantRenewalFailed(renewal, reason: "\(error)")) }
            }
        }
    }

    private func takeGrant(_ request: GrantRequest) {
        let metrics = environment.metrics
        environment.registry.takeGrant(request, holder: grantHolder) { outcome in
            switch outcome {
            case .success(let answer):
                if answer.extra > .zero { metrics.grantsTaken.increment() }
                if answer.extra == .zero && request.want > .zero { metrics.grantsRefused.increment() }
                if answer.expired > 0 { metrics.grantsExpired.increment(by: answer.expired) }
                self.perform { $0.run(.grantAnswered(request, answer)) }
            case .failure(let error):
                metrics.grantRequestsFailed.increment()
                self.perform { $0.run(.grantFailed(request, reason: "\(error)")) }
            }
        }
    }

    /// Users whose spend one query reloads. A tick spreads a larger refresh over its first
    /// seconds, a chunk a second (over half the tick at most): one query for 5,000 users was
    /// ~300 ms of a core at once, which showed in the acknowledgement tail of 10,000 live calls.
    package static let refreshChunkUsers = 500

    private func refresh(_ userIDs: [String], asOf: Timestamp, paced: Bool) {
        let starts = Array(stride(from: 0, to: userIDs.count, by: Self.refreshChunkUsers))
        let spacingMilliseconds = min(1_000, core.settings.tickSeconds * 1_000 / 2 / max(starts.count, 1))
        for (position, start) in starts.enumerated() {
            let chunk = Array(userIDs[start..<min(start + Self.refreshChunkUsers, userIDs.count)])
            let load: @Sendable () -> Void = { [self] in
                environment.registry.refresh(chunk, at: asOf) { outcome in
                    // Keep metering from memory until the database is back.
                    guard case .success(let snapshots) = outcome else { return }
                    self.perform { $0.run(.budgetsRefreshed(snapshots, asOf: asOf)) }
                }
            }
            if paced && position > 0 {
                executor.queue.asyncAfter(deadline: .now() + .milliseconds(position * spacingMilliseconds)) {
                    // Not after the server stopped ticking.
                    self.perform { shard in if shard.tickTimer != nil { load() } }
                }
            } else {
                load()
            }
        }
    }
}
