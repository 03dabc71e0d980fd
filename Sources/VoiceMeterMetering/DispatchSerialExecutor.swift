import Dispatch

/// A serial executor over a `DispatchQueue`, so an actor's isolation is its queue (Linux has no
/// `DispatchSerialQueue`). `checkIsolated` lets `assumeIsolated` work from blocks on that queue.
package final class DispatchSerialExecutor: SerialExecutor {
    package let queue: DispatchQueue

    package init(label: String) {
        queue = DispatchQueue(label: label)
    }

    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedSerialExecutor()) }
    }

    package func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    package func checkIsolated() {
        dispatchPrecondition(condition: .onQueue(queue))
    }
}
