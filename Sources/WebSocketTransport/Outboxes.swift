import DequeModule
import Synchronization

/// Per-connection bounded queues of outbound messages, shared between any thread that sends and
/// the service thread that writes, plus the commands other threads leave for the service thread.
///
/// Other threads only append here and wake the service loop (`lws_cancel_service`, the one
/// thread-safe lws call); wakes are coalesced so a burst of sends costs one syscall.
final class Outboxes: Sendable {
    enum Command: Sendable {
        case resumeAllPaused
        case stopReceivingAll
        /// The answer to a plain HTTP request (the connection's id).
        case httpAnswered(Int, HTTPResponse)
        case close(Int, code: UInt16, reason: String)
    }

    /// How a message may move in its queue.
    enum Order: Sendable {
        /// Keeps its place.
        case inOrder
        /// May be overtaken by an urgent message (a cumulative acknowledgement loses nothing by waiting).
        case overtakable
        /// Goes ahead of every overtakable message already queued.
        case urgent
    }

    private struct Outbound {
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
    func enqueue(_ payload: [UInt8], for id: Int, order: Order = .inOrder) -> Bool? {
        state.withLock { state in
            guard state.queues[id] != nil else { return nil }
            if state.queues[id]!.count >= capacity {
                state.commands.append(.close(id, code: 1008, reason: "not reading: outbox full"))
            } else {
                let outbound = Outbound(payload: payload, overtakable: order == .overtakable)
                if order == .urgent, let overtaken = state.queues[id]!.firstIndex(where: \.overtakable) {
                    state.queues[id]!.insert(outbound, at: overtaken)
                } else {
                    state.queues[id]!.append(outbound)
                }
                state.readyToWrite.insert(id)
            }
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
        state.withLock { state in
            guard let outbound = state.queues[id]?.popFirst() else { return nil }
            return (outbound.payload, !(state.queues[id]?.isEmpty ?? true))
        }
    }

    var isStopping: Bool { state.withLock { $0.stopping } }
}
