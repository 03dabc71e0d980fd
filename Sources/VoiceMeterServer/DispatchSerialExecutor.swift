import Dispatch

/// A serial executor over a `DispatchQueue`, so an actor's isolation is its queue (Linux has no
/// `DispatchSerialQueue`). `checkIsolated` lets `assumeIsolated` work from blocks on that queue.
final class DispatchSerialExecutor: SerialExecutor {
    let queue: DispatchQueue

    init(label: String) {
        queue = DispatchQueue(label: label)
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedSerialExecutor()) }
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    func checkIsolated() {
        dispatchPrecondition(condition: .onQueue(queue))
    }
}
