import Dispatch
import VoiceMeterDomain

/// Metering's time: the wall clock it stamps with, and the repeating timer that drives the budget
/// tick. Injected so tests run the tick on a fake clock.
public protocol MeteringClock: Sendable {
    var now: Timestamp { get }
    /// Runs `handler` on `queue` every `seconds` of this clock's time for as long as the returned
    /// handle is kept.
    func repeating(every seconds: Int, on queue: DispatchQueue, _ handler: @escaping @Sendable () -> Void) -> AnyObject
}

/// Real time: `CLOCK_REALTIME` and a `DispatchSourceTimer` on the given (shard's own) queue.
public struct SystemMeteringClock: MeteringClock {
    public init() {}

    public var now: Timestamp { .now }

    public func repeating(every seconds: Int, on queue: DispatchQueue, _ handler: @escaping @Sendable () -> Void) -> AnyObject {
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + .seconds(seconds), repeating: .seconds(seconds))
        timer.setEventHandler(handler: handler)
        timer.resume()
        return timer as AnyObject
    }
}
