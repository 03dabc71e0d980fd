import Foundation
import HeapModule
import Synchronization
import VoiceMeterClient
import VoiceMeterDomain
import VoiceMeterStore

/// How a simulation run is shaped.
public struct SimulationOptions: Sendable {
    public var calls = 20
    /// Calls live at the same time.
    public var concurrency = 20
    /// WebSocket connections carrying the calls (default: one per live call, as a pipeline
    /// process per call would).
    public var connections: Int?
    /// Simulated seconds per real second: 60 plays a 5-minute call in 5 s.
    public var speed = 60.0
    /// Makes the calls (sizes, timing, personas, fallbacks) reproducible.
    public var seed: UInt64 = 1
    public var shape = CallShape()
    /// When set, every call replays this recorded session instead of a generated one.
    public var replay: CallScript?
    public var scenario = Scenario.normal
    /// Users the calls are drawn from (default: one per ten calls).
    public var users: Int?
    /// Prefix of the run's call and user IDs, unique per run so runs never collide.
    public var runID = "run"
    /// The number in the run's first call ID (calls are numbered from it).
    public var firstCall = 1
    /// How long to wait for `call.accepted` or `call.summary` before a call counts as failed.
    public var answerTimeout = Duration.seconds(30)

    public init() {}

    public var connectionCount: Int { max(1, min(connections ?? concurrency, calls)) }
    public var userCount: Int { max(1, users ?? calls / 10) }

    public func callID(_ index: Int) -> String { "SIM-\(runID)-\(String(format: "%06d", index + firstCall))" }
    public func userID(_ index: Int) -> String { "sim-\(runID)-user-\(String(format: "%04d", index % userCount + 1))" }
    /// Every user the run's calls belong to.
    public var userIDs: [String] { (0..<min(userCount, calls)).map(userID) }
}

/// A snapshot for progress output.
public struct SimulationProgress: Sendable {
    public var callsFinished: Int
    public var callsTotal: Int
    public var callsLive: Int
    public var cutOff: Int
    public var rejected: Int
    public var framesSent: Int
    public var framesAcknowledged: Int
    public var elapsed: Duration
}

/// Plays calls against a server as careful voice pipelines would: admission first, usage on the
/// call's own clock, hang-up on `budget.cutoff` after reporting the last usage, `call.end`, then
/// waiting for the summary.
public final class SimulationRunner: Sendable {
    private let options: SimulationOptions
    private let endpoint: VoiceMeterEndpoint
    private let state: Mutex<RunState>
    private let clock = ContinuousClock()
    /// The run's streams, for sends made from server events (set before any event can arrive).
    private let openStreams = Mutex<[VoiceMeterStream]>([])

    public init(options: SimulationOptions, endpoint: VoiceMeterEndpoint) {
        self.options = options
        self.endpoint = endpoint
        var random = SimulationRandom(seed: options.seed)
        let calls = (0..<options.calls).map { index in
            let script = options.replay ?? options.shape.script(using: &random)
            return LiveCall(result: CallResult(callID: options.callID(index), userID: options.userID(index), personaID: script.personaID),
                            script: script, random: SimulationRandom(seed: random.next()), stream: index % options.connectionCount)
        }
        state = Mutex(RunState(calls: calls, streamDroppedAt: Array(repeating: nil, count: options.connectionCount)))
    }

    /// Runs every call to its end; calls `progress` about five times a second.
    public func run(progress: (SimulationProgress) -> Void = { _ in }) throws -> SimulationResult {
        let client = try VoiceMeterClient()
        let started = clock.now
        let streams = openStreams.withLock { openStreams in
            openStreams = (0..<options.connectionCount).map { index in
                client.openStream(to: endpoint) { [self] event in handle(event, stream: index) }
            }
            return openStreams
        }
        var lastProgress = started
        var lastTimeoutSweep = started
        while true {
            let now = clock.now
            let done = state.withLock { state -> Bool in
                launchCalls(&state, streams)
                while let due = state.schedule.min, due.at <= now {
                    state.schedule.removeMin()
                    step(due.call, &state, streams, now: now)
                }
                if now - lastTimeoutSweep > .milliseconds(500) {
                    failOverdueCalls(&state, now: now)
                    lastTimeoutSweep = now
                }
                return state.finished == options.calls
            }
            if done || now - lastProgress >= .milliseconds(200) {
                progress(snapshot(elapsed: now - started))
                lastProgress = now
            }
            if done { break }
            let wait = state.withLock { $0.schedule.min.map { $0.at - clock.now } } ?? .milliseconds(2)
            usleep(UInt32(min(max(wait, .microseconds(200)), .milliseconds(2)) / .microseconds(1)))
        }
        let elapsed = clock.now - started
        streams.forEach { $0.close() }
        client.shutdown()
        return state.withLock { state in
            SimulationResult(options: options, calls: state.calls.map(\.result), elapsed: elapsed, ackLatencies: state.latencies.sorted(),
                             errorsByCode: state.errorsByCode, errorSamples: state.errorSamples, reconnects: state.reconnects,
                             unreadableMessages: state.unreadable)
        }
    }

    // MARK: Driving calls (the run loop's thread)

    private func launchCalls(_ state: inout RunState, _ streams: [VoiceMeterStream]) {
        while state.live < options.concurrency, state.launched < options.calls {
            let index = state.launched
            state.launched += 1
            state.live += 1
            var call = state.calls[index]
            let now = startStamp(of: call.script)
            call.startedAt = now
            call.phase = .admitting(since: clock.now)
            state.calls[index] = call
            state.indexByCallID[call.result.callID] = index
            let start = CallStart(callID: call.result.callID, userID: call.result.userID, personaID: call.script.personaID,
                                  startedAt: now, revenue: call.script.revenue)
            try? streams[call.stream].start(start)
        }
    }

    private func step(_ index: Int, _ state: inout RunState, _ streams: [VoiceMeterStream], now: ContinuousClock.Instant) {
        var call = state.calls[index]
        defer { state.calls[index] = call }
        guard case .talking(let answeredAt) = call.phase else { return }
        let stream = streams[call.stream]
        let callID = call.result.callID
        if call.result.cutoffScope != nil {
            hangUp(&call, stream, offset: min(simulatedMilliseconds(now - answeredAt), call.script.durationMilliseconds), now: now)
            return
        }
        guard call.nextStep < call.script.usage.count else {
            try? stream.end(callID: callID, at: call.instant(at: call.script.durationMilliseconds))
            call.phase = .ending(since: now)
            return
        }
        let usage = call.script.usage[call.nextStep].metered(callStartedAt: call.startedAt)
        if let seq = try? stream.send(callID: callID, usage: usage) {
            call.result.framesSent += 1
            if options.scenario == .duplicates, call.random.chance(perMille: Scenario.duplicatePerMille) {
                stream.sendRaw(ClientMessage.usage(UsageFrame(callID: callID, seq: seq, usage: usage)).json)
                call.result.duplicatesSent += 1
            }
        }
        if options.scenario == .reconnect, call.nextStep == call.script.usage.count / 2 {
            // One drop per connection at a time: a storm of drops would only test the backoff.
            if state.streamDroppedAt[call.stream].map({ now - $0 > .milliseconds(200) }) ?? true {
                state.streamDroppedAt[call.stream] = now
                stream.dropConnection()
            }
        }
        call.nextStep += 1
        let nextOffset = call.nextStep < call.script.usage.count ? call.script.usage[call.nextStep].offsetMilliseconds : call.script.durationMilliseconds
        state.schedule.insert(Due(at: answeredAt + realDuration(simulatedMilliseconds: nextOffset), call: index))
    }

    /// What a pipeline does on `budget.cutoff`: report the telephony time not yet reported, then hang up.
    private func hangUp(_ call: inout LiveCall, _ stream: VoiceMeterStream, offset: Int64, now: ContinuousClock.Instant) {
        let callID = call.result.callID
        let lastSeconds = call.script.unreportedTelephonySeconds(at: offset)
        if !lastSeconds.isZero {
            let usage = MeteredUsage(service: "twilio", operation: "voice_outbound", unit: .seconds, amount: lastSeconds, occurredAt: call.instant(at: offset))
            if let seq = try? stream.send(callID: callID, usage: usage) {
                call.result.framesSent += 1
                call.result.seqsAfterCutoff.append(seq)
            }
        }
        try? stream.end(callID: callID, at: call.instant(at: offset))
        call.phase = .ending(since: now)
    }

    private func failOverdueCalls(_ state: inout RunState, now: ContinuousClock.Instant) {
        for index in 0..<state.launched {
            let waitingSince: ContinuousClock.Instant
            let awaited: String
            switch state.calls[index].phase {
            case .admitting(let since): (waitingSince, awaited) = (since, "call.accepted or call.rejected")
            case .ending(let since): (waitingSince, awaited) = (since, "call.summary")
            case .waiting, .talking, .finished: continue
            }
            if now - waitingSince > options.answerTimeout {
                finish(index, .failed, detail: "no \(awaited) within \(options.answerTimeout)", &state)
            }
        }
    }

    private func finish(_ index: Int, _ outcome: CallResult.Outcome, detail: String?, _ state: inout RunState) {
        if case .finished = state.calls[index].phase { return }
        state.calls[index].phase = .finished
        state.calls[index].result.outcome = outcome
        state.calls[index].result.detail = detail
        state.live -= 1
        state.finished += 1
    }

    // MARK: Server events (the client's service thread)

    private func handle(_ event: VoiceMeterEvent, stream: Int) {
        let now = clock.now
        state.withLock { state in
            switch event {
            case .connected:
                if state.connectedStreams.insert(stream).inserted == false { state.reconnects += 1 }
            case .disconnected:
                break
            case .unreadable:
                state.unreadable += 1
            case .acknowledged(let callID, let throughSeq, let latencies):
                guard let index = state.indexByCallID[callID] else { return }
                state.calls[index].result.framesAcknowledged += latencies.count
                state.calls[index].result.acknowledgedThroughSeq = max(state.calls[index].result.acknowledgedThroughSeq, throughSeq)
                state.latencies += latencies
            case .message(let message):
                received(message, &state, stream: stream, now: now)
            }
        }
    }

    private func received(_ message: ServerMessage, _ state: inout RunState, stream: Int, now: ContinuousClock.Instant) {
        if case .error(let error) = message {
            state.errorsByCode[error.code.rawValue, default: 0] += 1
            if state.errorSamples.count < 5 { state.errorSamples.append("\(error.code.rawValue): \(error.message) (call \(error.callID ?? "-"), seq \(error.seq.map(String.init) ?? "-"))") }
            return
        }
        guard let callID = Self.callID(of: message), let index = state.indexByCallID[callID] else { return }
        switch message {
        case .callAccepted:
            // Also sent again when a call resumes on a new connection; only the first one answers the call.
            guard case .admitting = state.calls[index].phase else { return }
            state.calls[index].phase = .talking(answeredAt: now)
            if options.scenario == .badInput {
                let call = state.calls[index]
                let raw = openStreams.withLock { $0[stream] }
                for (malformed, _) in Scenario.malformedMessages(callID: callID, at: call.startedAt) { raw.sendRaw(malformed) }
            }
            let first = state.calls[index].script.usage.first?.offsetMilliseconds ?? state.calls[index].script.durationMilliseconds
            state.schedule.insert(Due(at: now + realDuration(simulatedMilliseconds: first), call: index))
        case .callRejected(_, let reason, _, _):
            finish(index, .rejected, detail: reason, &state)
        case .budgetWarning:
            state.calls[index].result.warnings += 1
        case .budgetCutoff(_, let scope, _, _):
            guard state.calls[index].result.cutoffScope == nil else { return }
            state.calls[index].result.cutoffScope = scope
            if case .talking = state.calls[index].phase { state.schedule.insert(Due(at: now, call: index)) }
        case .callSummary(_, let cost, let byService, let revenue, let paymentFee, let margin):
            state.calls[index].result.summary = CallResult.Summary(
                cost: cost, byService: Dictionary(byService.map { ($0.service, $0.cost) }, uniquingKeysWith: { $1 }),
                revenue: revenue, paymentFee: paymentFee, margin: margin)
            finish(index, state.calls[index].result.cutoffScope == nil ? .completed : .cutOff, detail: nil, &state)
        case .ack, .error:
            break
        }
    }

    private static func callID(of message: ServerMessage) -> String? {
        switch message {
        case .callAccepted(let id, _, _, _), .callRejected(let id, _, _, _), .ack(let id, _), .budgetWarning(let id, _, _, _, _),
             .budgetCutoff(let id, _, _, _), .callSummary(let id, _, _, _, _, _): id
        case .error(let error): error.callID
        }
    }

    // MARK: Time

    private func simulatedMilliseconds(_ real: Duration) -> Int64 {
        Int64(real / .milliseconds(1) * options.speed)
    }

    private func realDuration(simulatedMilliseconds milliseconds: Int64) -> Duration {
        .microseconds(Int64(Double(milliseconds) * 1_000 / options.speed))
    }

    /// The stamp of a call starting now, relative to the present: a call replayed faster than
    /// real time starts in the past, so that its last frame is stamped when it is sent (the server
    /// refuses stamps more than a minute ahead of its clock, and starts more than 15 minutes old).
    private func startStamp(of script: CallScript) -> Timestamp {
        let compressed = script.durationMilliseconds - Int64(Double(script.durationMilliseconds) / options.speed)
        return Timestamp.now.adding(milliseconds: -max(compressed, 0))
    }

    private func snapshot(elapsed: Duration) -> SimulationProgress {
        state.withLock { state in
            SimulationProgress(callsFinished: state.finished, callsTotal: options.calls, callsLive: state.live,
                               cutOff: state.calls.count { $0.result.outcome == .cutOff }, rejected: state.calls.count { $0.result.outcome == .rejected },
                               framesSent: state.calls.reduce(0) { $0 + $1.result.framesSent },
                               framesAcknowledged: state.calls.reduce(0) { $0 + $1.result.framesAcknowledged }, elapsed: elapsed)
        }
    }
}

/// A call's progress through the run.
struct LiveCall: Sendable {
    enum Phase: Sendable {
        case waiting
        case admitting(since: ContinuousClock.Instant)
        case talking(answeredAt: ContinuousClock.Instant)
        case ending(since: ContinuousClock.Instant)
        case finished
    }

    var result: CallResult
    var script: CallScript
    var random: SimulationRandom
    var stream: Int
    var phase = Phase.waiting
    var startedAt = Timestamp(microsecondsSinceEpoch: 0)
    var nextStep = 0

    func instant(at offsetMilliseconds: Int64) -> Timestamp {
        startedAt.adding(milliseconds: offsetMilliseconds)
    }
}

struct Due: Comparable, Sendable {
    var at: ContinuousClock.Instant
    var call: Int

    static func < (lhs: Due, rhs: Due) -> Bool { (lhs.at, lhs.call) < (rhs.at, rhs.call) }
}

struct RunState: Sendable {
    var calls: [LiveCall]
    var indexByCallID: [String: Int] = [:]
    var schedule = Heap<Due>()
    var launched = 0
    var live = 0
    var finished = 0
    var latencies: [Duration] = []
    var errorsByCode: [String: Int] = [:]
    var errorSamples: [String] = []
    var reconnects = 0
    var connectedStreams: Set<Int> = []
    var streamDroppedAt: [ContinuousClock.Instant?]
    var unreadable = 0

    init(calls: [LiveCall], streamDroppedAt: [ContinuousClock.Instant?]) {
        self.calls = calls
        self.streamDroppedAt = streamDroppedAt
    }
}

