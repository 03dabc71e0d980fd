import DequeModule
import Foundation
import Logging
import PostgresClient
import Synchronization
import VoiceMeterDomain
import VoiceMeterStore

/// What one committed batch did, for the metering side to acknowledge.
public struct CommittedBatch: Sendable {
    public var events: [UsageEvent]
    public var result: EventCommitResult
    public var endings: [EndedCall]
    /// Events left in the writer's queue after this commit (flow control resumes sockets by it).
    public var queuedEventsAfter: Int

    /// The batch split by the shard of each event's and ending's user.
    package func split(by shardOfUser: (String) -> Int, shardCount: Int) -> [(Int, CommittedBatch)] {
        guard shardCount > 1 else { return [(0, self)] }
        // Appended in place through the subscript: a copy taken out and written back would copy
        // the whole part on every append (quadratic in the batch size).
        var parts = Array(repeating: CommittedBatch(events: [], result: result, endings: [], queuedEventsAfter: queuedEventsAfter),
                          count: shardCount)
        var used = Array(repeating: false, count: shardCount)
        for event in events {
            let index = shardOfUser(event.userID)
            parts[index].events.append(event)
            used[index] = true
        }
        for ended in endings {
            let index = shardOfUser(ended.ending.userID)
            parts[index].endings.append(ended)
            used[index] = true
        }
        return parts.indices.filter { used[$0] }.map { ($0, parts[$0]) }
    }
}

/// Where a writer reports, on its thread: each commit, and each event the database refused
/// outright (a data error, not an outage; the rest of its batch is committed without it).
public struct LedgerReports: Sendable {
    public var committed: @Sendable (CommittedBatch) -> Void
    public var refused: @Sendable (UsageEvent, String) -> Void

    public init(committed: @escaping @Sendable (CommittedBatch) -> Void, refused: @escaping @Sendable (UsageEvent, String) -> Void = { _, _ in }) {
        self.committed = committed
        self.refused = refused
    }
}

/// Commits priced events in batches on a thread of its own with its own connection: flush at
/// `batchEventsMax` events or when the oldest has waited `flushIntervalMilliseconds`.
///
/// Nothing is reported committed before its transaction commits. When PostgreSQL is down or slow
/// the batch is retried with backoff, never dropped; the queue is bounded, and `submit` refuses
/// new events when it is full (`IngressBackpressure` stops reading sockets well before).
/// It queues from construction; it commits once started, and reports to what `start` is given.
public final class LedgerWriter: Sendable {
    private enum Item: Sendable {
        case event(UsageEvent)
        case ending(CallEnding)
    }

    private struct State {
        /// Each item with when it entered the queue (uptime nanoseconds).
        var items: Deque<(item: Item, enqueuedAt: UInt64)> = []
        var oldestEnqueued: UInt64? { items.first?.enqueuedAt }
        var stopping = false
    }

    /// Events in the queue. Changed only under `state`'s lock (decisions stay consistent with the
    /// queue); an atomic so flow control can read it per frame without taking the lock.
    private let queuedEvents = Atomic<Int>(0)
    /// Its place among the writers (flow control counts per writer).
    package let index: Int

    private let state = Mutex(State())
    private let wakeUp = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let options: PostgresConnectionOptions
    private let batchEventsMax: Int
    private let flushIntervalNanoseconds: UInt64
    private let queueEventsMax: Int
    private let logger: Logger
    private let metrics: LedgerMetrics
    private let inOutage = Atomic<Bool>(false)

    /// Whether the writer cannot commit right now and retries its batch (for `/readyz`; the log
    /// says why).
    public var isInOutage: Bool { inOutage.load(ordering: .relaxed) }

    /// - Parameter index: its place among `LedgerWriters.writers` (flow control counts by it).
    package init(index: Int, options: PostgresConnectionOptions, batchEventsMax: Int, flushIntervalMilliseconds: Int, queueEventsMax: Int,
                 logger: Logger, metrics: LedgerMetrics = LedgerMetrics()) {
        self.index = index
        self.metrics = metrics
        self.options = options
        self.batchEventsMax = batchEventsMax
        self.flushIntervalNanoseconds = UInt64(flushIntervalMilliseconds) * 1_000_000
        self.queueEventsMax = queueEventsMax
        self.logger = logger
    }

    /// Starts committing on a thread of its own, reporting to `reports`.
    public func start(reporting reports: LedgerReports) {
        let thread = Thread { [self] in self.run(reporting: reports) }
        thread.name = "voicemeter.writer"
        thread.start()
    }

    /// Queues an event; `false` when the queue is full (answer `overloaded`, the client resends).
    public func submit(_ event: UsageEvent) -> Bool {
        let (accepted, wake) = state.withLock { state -> (Bool, Bool) in
            let queued = queuedEvents.load(ordering: .relaxed)
            guard queued < queueEventsMax, !state.stopping else { return (false, false) }
            state.items.append((.event(event), DispatchTime.now().uptimeNanoseconds))
            queuedEvents.store(queued + 1, ordering: .relaxed)
            return (true, queued + 1 == 1 || queued + 1 == batchEventsMax)
        }
        if wake { wakeUp.signal() }
        if accepted { metrics.queueDepth.increment() }
        return accepted
    }

    /// Queues a call's end behind its events; it is committed with them.
    package func submit(_ ending: CallEnding) {
        state.withLock { state in
            state.items.append((.ending(ending), DispatchTime.now().uptimeNanoseconds))
        }
        wakeUp.signal()
    }

    /// Events waiting in the queue.
    package var queuedEventCount: Int { queuedEvents.load(ordering: .relaxed) }

    /// Commits what is queued, then stops; returns when done or after `timeoutSeconds`.
    public func drainAndStop(timeoutSeconds: Double) {
        state.withLock { $0.stopping = true }
        wakeUp.signal()
        _ = finished.wait(timeout: .now() + timeoutSeconds)
    }

    // MARK: The writer thread

    private func run(reporting reports: LedgerReports) {
        var connection: PostgresConnection?
        var lostConnection = false
        var backoffMilliseconds: UInt32 = 50
        // Batches to commit, in order; a batch the database refuses is split to isolate the bad event.
        var pending: [Batch] = []
        while true {
            if pending.isEmpty {
                guard let batch = nextBatch() else { break }
                pending = [batch]
            }
            let batch = pending.removeFirst()
            do {
                if connection == nil {
                    connection = try PostgresConnection(options)
                    if lostConnection { metrics.databaseReconnects.increment() }
                    lostConnection = false
                }
                let started = DispatchTime.now().uptimeNanoseconds
                let committed = try commit(batch, on: connection!)
                let now = DispatchTime.now().uptimeNanoseconds
                metrics.commitDuration.recordNanoseconds(now - started)
                metrics.batchEvents.record(batch.events.count)
                metrics.eventsCommitted.increment(by: committed.result.inserted.count)
                if let oldest = batch.oldestEnqueued { metrics.ackLatency.recordNanoseconds(now - min(oldest, now)) }
                reports.committed(committed)
                backoffMilliseconds = 50
                if isInOutage { enterOutage(false) }
            } catch let error as PostgresError where error.isDataError {
                // A data error fails every retry of the same rows. Events and endings are tried
                // apart first (an ending that fails never blames an event), then the events are
                // split until the refused one is alone.
                if !batch.events.isEmpty && !batch.endings.isEmpty {
                    pending.insert(contentsOf: [Batch(events: batch.events, oldestEnqueued: batch.oldestEnqueued), Batch(endings: batch.endings)], at: 0)
                } else if batch.events.count > 1 {
                    let middle = batch.events.count / 2
                    pending.insert(contentsOf: [Batch(events: Array(batch.events[..<middle])), Batch(events: Array(batch.events[middle...]))], at: 0)
                } else if let event = batch.events.first {
                    logger.error("the database refused an event; it is answered with an error, not stored", metadata: [
                        "call.id": "\(event.key.callID)", "seq": "\(event.key.seq)", "error": "\(error)",
                    ])
                    reports.refused(event, "\(error)")
                } else {
                    logger.error("the database refused closing calls; they stay open", metadata: ["error": "\(error)"])
                }
            } catch {
                // Anything else is an outage (the server is away, read-only or demoted, a privilege
                // or table is missing, a lock timed out): the batch is kept and retried on a fresh
                // connection (after a failover it may reach the new primary), never refused.
                logger.warning("ledger writer cannot commit; retrying", metadata: [
                    "error": "\(error)", "retry.ms": "\(backoffMilliseconds)", "batch.events": "\(batch.events.count)",
                ])
                metrics.commitRetries.increment()
                enterOutage(true)
                pending.insert(batch, at: 0)
                connection = nil
                lostConnection = true
                usleep(backoffMilliseconds * 1_000)
                backoffMilliseconds = min(backoffMilliseconds * 2, 2_000)
            }
        }
        finished.signal()
    }

    /// Records the start (`true`) or the end of an outage.
    private func enterOutage(_ now: Bool) {
        guard inOutage.exchange(now, ordering: .relaxed) != now else { return }
        if now { metrics.writersInOutage.increment() } else { metrics.writersInOutage.decrement() }
    }

    private struct Batch {
        var events: [UsageEvent] = []
        var endings: [CallEnding] = []
        /// When its oldest item entered the queue (uptime nanoseconds).
        var oldestEnqueued: UInt64?
    }

    /// Waits until a batch is due and takes it; `nil` once stopping with nothing left.
    private func nextBatch() -> Batch? {
        while true {
            let taken: Batch? = state.withLock { state in
                let now = DispatchTime.now().uptimeNanoseconds
                let due = queuedEvents.load(ordering: .relaxed) >= batchEventsMax || state.stopping
                    || (state.oldestEnqueued.map { now - $0 >= flushIntervalNanoseconds } ?? false)
                guard due, !state.items.isEmpty else { return nil }
                var batch = Batch(oldestEnqueued: state.oldestEnqueued)
                while let (item, _) = state.items.first, batch.events.count < batchEventsMax {
                    state.items.removeFirst()
                    switch item {
                    case .event(let event): batch.events.append(event); queuedEvents.subtract(1, ordering: .relaxed)
                    case .ending(let ending): batch.endings.append(ending)
                    }
                }
                return batch
            }
            if let taken {
                metrics.queueDepth.decrement(by: Double(taken.events.count))
                return taken
            }
            if state.withLock({ $0.stopping && $0.items.isEmpty }) { return nil }
            _ = wakeUp.wait(timeout: .now() + .nanoseconds(Int(flushIntervalNanoseconds)))
        }
    }

    private func commit(_ batch: Batch, on connection: PostgresConnection) throws -> CommittedBatch {
        var ended: [EndedCall] = []
        let result = try EventStore(connection: connection).commit(batch.events) { connection in
            ended = try batch.endings.map { try CallStore.end($0, on: connection) }
        }
        return CommittedBatch(events: batch.events, result: result, endings: ended, queuedEventsAfter: queuedEventCount)
    }
}
