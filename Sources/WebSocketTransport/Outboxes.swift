import DequeModule
import Synchronization

/// How an outbound message may move in its connection's queue.
public enum OutboundOrder: Sendable {
    /// Keeps its place.
    case inOrder
    /// May be overtaken by an urgent message (a cumulative acknowledgement loses nothing by waiting).
    case overtakable
    /// Goes ahead of every overtakable message already queued.
    case urgent
}

/// Per-connection bounded queues of outbound messages, shared between any thread that sends and
/// the service thread that writes, plus the commands other threads leave for the service thread.
///
/// Other threads only append here and wake the service loop (`lws_cancel_service`, the one
/// thread-safe lws call, through `ServiceWake`); wakes are coalesced so a burst of sends costs one syscall.
final class Outboxes: Sendable {
    enum Command: Sendable {
        case resumeAllPaused
        case stopReceivingAll
        /// The answer to a plain HTTP request (the connection's id).
        case httpAnswered(Int, HTTPResponse)
        case close(Int, code: UInt16, reason: String)
    }

    fileprivate struct Outbound {
        var payload: [UInt8]
        var overtakable: Bool
    }

    private struct State {
        var queues: [Int: Deque<Outbound>] = [:]
        var readyToWrite: Set<Int> = []
        var commands: [Command] = []
        var wakePending = false
        var stopping = false
    }

    private let state = Mutex(State())
    private let capacity: Int

    init(capacityPerConnection: Int) {
        self.capacity = capacityPerConnection
    }

    func open(_ id: Int) {
        state.withLock { $0.queues[id] = Deque() }
    }

    func remove(_ id: Int) {
        state.withLock {
            $0.queues[id] = nil
            $0.readyToWrite.remove(id)
        }
    }

    /// Queues a message; returns whether the service loop must be woken, or `nil` when the
    /// connection is gone. A full outbox closes the connection (the peer does not read).
    func enqueue(_ payload: [UInt8], for id: Int, order: OutboundOrder = .inOrder) -> Bool? {
        enqueue(CollectionOfOne(payload), for: id, order: order)
    }

    /// Queues messages in their order, under one lock; otherwise as `enqueue(_:for:order:)`.
    func enqueue(_ payloads: some Collection<[UInt8]>, for id: Int, order: OutboundOrder = .inOrder) -> Bool? {
        let capacity = capacity
        return state.withLock { state in
            // One lookup: the queue is changed in place through the dictionary.
            guard let (queued, full) = state.queues[id]?.append(contentsOf: payloads, order: order, capacity: capacity) else { return nil }
            if queued > 0 { state.readyToWrite.insert(id) }
            if full { state.commands.append(.close(id, code: 1008, reason: "not reading: outbox full")) }
            return takeWake(&state)
        }
    }

    /// Leaves a command for the service thread; returns whether the loop must be woken.
    func post(_ command: Command) -> Bool {
        state.withLock { state in
            state.commands.append(command)
            return takeWake(&state)
        }
    }

    /// Asks for a wake without a command (the caller left its work elsewhere); returns whether the
    /// loop must be woken.
    func requestWake() -> Bool {
        state.withLock { takeWake(&$0) }
    }

    func requestStop() -> Bool {
        state.withLock { state in
            state.stopping = true
            return takeWake(&state)
        }
    }

    private func takeWake(_ state: inout State) -> Bool {
        guard !state.wakePending else { return false }
        state.wakePending = true
        return true
    }

    /// On the service thread after a wake: the connections with queued messages and the commands.
    func drainWake() -> (ready: Set<Int>, commands: [Command], stopping: Bool) {
        state.withLock { state in
            state.wakePending = false
            defer {
                state.readyToWrite.removeAll(keepingCapacity: true)
                state.commands.removeAll(keepingCapacity: true)
            }
            return (state.readyToWrite, state.commands, state.stopping)
        }
    }

    /// The next message for a connection, and whether more remain.
    func next(for id: Int) -> (payload: [UInt8], more: Bool)? {
        state.withLock { $0.queues[id]?.popFirstNotingMore() }
    }

    var isStopping: Bool { state.withLock { $0.stopping } }
}

private extension Deque<Outboxes.Outbound> {
    /// Appends `payloads` (an urgent one ahead of every overtakable one) until `capacity`: how
    /// many went in, and whether some did not fit.
    mutating func append(contentsOf payloads: some Collection<[UInt8]>, order: OutboundOrder, capacity: Int) -> (queued: Int, full: Bool) {
        var queued = 0
        for payload in payloads {
            guard count < capacity else { return (queued, true) }
            let outbound = Outboxes.Outbound(payload: payload, overtakable: order == .overtakable)
            if order == .urgent, let overtaken = firstIndex(where: \.overtakable) {
                insert(outbound, at: overtaken)
            } else {
                append(outbound)
            }
            queued += 1
        }
        return (queued, false)
    }

    /// The first payload, and whether more remain.
    mutating func popFirstNotingMore() -> (payload: [UInt8], more: Bool)? {
        popFirst().map { ($0.payload, !isEmpty) }
    }
}
