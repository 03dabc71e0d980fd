import Dispatch
import Foundation
import PostgresClient
import Synchronization
import Testing
import VoiceMeterDomain
import VoiceMeterMetering
import VoiceMeterServer
import VoiceMeterStore
import VoiceMeterTestSupport

/// Time that moves only when a test says so; its timers fire on their queues as it passes them.
final class FakeClock: MeteringClock {
    private struct Timer {
        var nextMicros: Int64
        let intervalMicros: Int64
        let queue: DispatchQueue
        let handle: Handle
    }

    /// A timer as the shard holds it; cancelling it releases its handler (as a dispatch timer
    /// does), so it no longer fires or keeps what the handler holds.
    final class Handle: MeteringTimer {
        private let handler: Mutex<(@Sendable () -> Void)?>
        init(_ handler: @escaping @Sendable () -> Void) { self.handler = Mutex(handler) }
        func cancel() { handler.withLock { $0 = nil } }
        var isCancelled: Bool { handler.withLock { $0 == nil } }
        func fire(on queue: DispatchQueue) {
            if let handler = handler.withLock({ $0 }) { queue.async(execute: handler) }
        }
    }

    private let state: Mutex<(now: Timestamp, timers: [Timer])>

    init(now: Timestamp) {
        state = Mutex((now, []))
    }

    var now: Timestamp { state.withLock { $0.now } }

    func repeating(every seconds: Int, on queue: DispatchQueue, _ handler: @escaping @Sendable () -> Void) -> any MeteringTimer {
        let handle = Handle(handler)
        state.withLock { state in
            let interval = Int64(seconds) * 1_000_000
            state.timers.append(Timer(nextMicros: state.now.microsecondsSinceEpoch + interval, intervalMicros: interval, queue: queue, handle: handle))
        }
        return handle
    }

    /// Timers not cancelled.
    var activeTimers: Int { state.withLock { $0.timers.count { !$0.handle.isCancelled } } }

    /// Moves time forward, firing every timer it passes (in time order) on its queue.
    func advance(seconds: Int64) {
        let fired = state.withLock { state -> [Timer] in
            let target = state.now.microsecondsSinceEpoch + seconds * 1_000_000
            var due: [(Int64, Timer)] = []
            for index in state.timers.indices {
                while state.timers[index].nextMicros <= target {
                    due.append((state.timers[index].nextMicros, state.timers[index]))
                    state.timers[index].nextMicros += state.timers[index].intervalMicros
                }
            }
            state.now = Timestamp(microsecondsSinceEpoch: target)
            return due.sorted { $0.0 < $1.0 }.map(\.1)
        }
        for timer in fired { timer.handle.fire(on: timer.queue) }
    }
}

@Suite("The budget tick on a fake clock", .serialized)
struct FakeClockTests {
    @Test("the tick fires every 30 s of fake time: a cut-off call that keeps streaming is told again on each tick")
    func tickEveryThirtySeconds() async throws {
        let clock = FakeClock(now: TestTime.start)
        let running = try await RunningServer(prepare: setBudget(BudgetSettings(callLimit: ExactDecimal("0.02"))), configure: { $0.clock = clock })
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let messages = running.canonicalCallMessages("CACLOCK")
            client.send(messages[0...12])
            func cutoffs() -> Int { client.messages.filter { $0.contains(#""type":"budget.cutoff""#) }.count }
            #expect(client.wait { _ in cutoffs() == 1 })

            client.send([messages[13]])
            #expect(client.wait { $0.contains(#"{"type":"ack","call_id":"CACLOCK","seq":13}"#) })
            clock.advance(seconds: 29)
            usleep(200_000)
            #expect(cutoffs() == 1)
            clock.advance(seconds: 1)
            #expect(client.wait { _ in cutoffs() == 2 })

            client.send([messages[14]])
            #expect(client.wait { $0.contains(#"{"type":"ack","call_id":"CACLOCK","seq":14}"#) })
            clock.advance(seconds: 30)
            #expect(client.wait { _ in cutoffs() == 3 })
            // Nothing streamed since: the next tick stays quiet.
            clock.advance(seconds: 30)
            usleep(200_000)
            #expect(cutoffs() == 3)
        }
    }

    @Test("a stopped server's budget tick is cancelled: every shard's timer, and nothing of it left running")
    func tickStopsWithTheServer() async throws {
        let clock = FakeClock(now: TestTime.start)
        let running = try await RunningServer(configure: { $0.clock = clock; $0.meteringShards = 2 })
        try await running.serving {
            // Each shard starts its tick on its own queue.
            let deadline = Date().addingTimeInterval(5)
            while clock.activeTimers < 2, Date() < deadline { usleep(10_000) }
            #expect(clock.activeTimers == 2)
        }
        #expect(clock.activeTimers == 0)
    }

    @Test("a call silent for ten minutes of fake time is closed as abandoned and summarized")
    func abandonedCall() async throws {
        let clock = FakeClock(now: TestTime.start)
        let running = try await RunningServer(configure: { $0.clock = clock })
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            client.send(running.canonicalCallMessages("CAQUIET").prefix(3))
            #expect(client.wait { $0.contains(#"{"type":"ack","call_id":"CAQUIET","seq":2}"#) })
            clock.advance(seconds: 570)
            usleep(200_000)
            #expect(!client.messages.contains { $0.contains("call.summary") })
            clock.advance(seconds: 30)
            #expect(client.waitForSummary())
            #expect(client.wait { _ in
                (try? running.database.query("SELECT status FROM calls WHERE call_id = 'CAQUIET'").single().decode("status", as: String.self)) == "abandoned"
            })
        }
    }
}
