import Dispatch
import ServiceLifecycle
import Synchronization

/// One long-running part of the server as a `Service`: `start` when the group runs, `stop` when
/// the group's graceful shutdown reaches it (or the group is cancelled). Both may block: they run
/// on the lifecycle's own thread.
struct ServerPart: Service, CustomStringConvertible {
    let description: String
    private let start: @Sendable () throws -> Void
    private let stop: @Sendable () -> Void

    init(_ name: String, start: @escaping @Sendable () throws -> Void, stop: @escaping @Sendable () -> Void) {
        self.description = name
        self.start = start
        self.stop = stop
    }

    func run() async throws {
        try start()
        // Until the shutdown reaches this part (or the group is cancelled: a part failed to start).
        // The handlers open the latch where they run: `gracefulShutdown()` would resume this
        // task from an unstructured task on the cooperative pool, which callers may be blocking.
        let reached = Latch()
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await reached.wait()
            } onGracefulShutdown: {
                reached.open()
            }
        } onCancel: {
            reached.open()
        }
        stop()
    }
}

/// Opens once; `wait` returns once it is open.
private final class Latch: Sendable {
    private let state = Mutex<(isOpen: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func wait() async {
        await withCheckedContinuation { continuation in
            let openAlready = state.withLock { state in
                if !state.isOpen { state.waiter = continuation }
                return state.isOpen
            }
            if openAlready { continuation.resume() }
        }
    }

    func open() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.isOpen = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }
}

/// The thread the server's lifecycle runs on: the service group and every part's start and stop.
/// A serial queue of its own, not Swift's cooperative pool: a part's stop blocks while it drains,
/// and callers of `VoiceMeterServer.start` and `shutdown` (tools, tests) may be blocking pool
/// threads while they wait for it.
final class LifecycleExecutor: TaskExecutor {
    private let queue = DispatchQueue(label: "voicemeter.lifecycle")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
