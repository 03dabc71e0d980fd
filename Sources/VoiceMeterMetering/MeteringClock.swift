import Dispatch
import VoiceMeterDomain

/// Metering's time: the wall clock it stamps with, and the repeating timer that drives the budget
/// tick. Injected so tests run the tick on a fake clock.
public protocol MeteringClock: Sendable {
    var now: Timestamp { get }
    /// Runs `handler` on `queue` every `seconds` of this clock's time until the returned timer is
    /// cancelled.
    func repeating(every seconds: Int, on queue: DispatchQueue, _ handler: @escaping @Sendable () -> Void) -> any MeteringTimer
}

/// A repeating timer of a `MeteringClock`.
public protocol MeteringTimer: AnyObject, Sendable {
    /// Stops it; its handler is released (a handler may hold what owns the timer).
    func cancel()
}

/// Real time: `CLOCK_REALTIME` and a `DispatchSourceTimer` on the given (shard's own) queue.
public struct SystemMeteringClock: MeteringClock {
    /// Microseconds added to `CLOCK_REALTIME` (zero but in tests set at a chosen instant).
    private let offsetMicroseconds: Int64

    public init() {
        offsetMicroseconds = 0
    }

    /// A clock that reads `instant` now and advances in real time from there: tests run a real
    /// server at the edges of the calendar (a month's last seconds) with it.
    public init(readingNow instant: Timestamp) {
        offsetMicroseconds = instant.microsecondsSinceEpoch - Timestamp.now.microsecondsSinceEpoch
    }

    public var now: Timestamp {
        Timestamp(microsecondsSinceEpoch: Timestamp.now.microsecondsSinceEpoch + offsetMicroseconds)
    }

    public func repeating(every seconds: Int, on queue: DispatchQueue, _ handler: @escaping @Sendable () -> Void) -> any MeteringTimer {
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + .seconds(seconds), repeating: .seconds(seconds))
        timer.setEventHandler(handler: handler)
        timer.resume()
        return DispatchMeteringTimer(source: timer)
    }
}

/// `@unchecked Sendable`: its one stored property is set in `init` and never changed, and
/// `DispatchSource.cancel()` may be called from any thread (libdispatch's documented contract).
private final class DispatchMeteringTimer: MeteringTimer, @unchecked Sendable {
    private let source: any DispatchSourceTimer

    package init(source: any DispatchSourceTimer) {
        self.source = source
    }

    package func cancel() {
        source.cancel()
    }
}
