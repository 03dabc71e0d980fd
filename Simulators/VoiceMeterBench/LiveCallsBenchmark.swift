import ArgumentParser
import Foundation
import PostgresClient
import Synchronization
import VoiceMeterSimulation
import VoiceMeterStore
import WebSocketTransport

/// Many live calls at once: one connection per call, each sending a frame a second, as a fleet of
/// pipeline processes would; ack latency, server memory and errors.
struct LiveCallsBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "live-calls",
        abstract: "10,000 concurrent connections, one call each, a frame per second: ack p99 ≤ 250 ms, server RSS ≤ 512 MiB, no errors.",
        discussion: "Raises this process's and the server's open-file limit to the hard limit (20,000 here); needs one descriptor per connection on each side."
    )

    struct Scale {
        var connections = 10_000
        var seconds = 60
        var flushMilliseconds: Int?
        static let quick = Scale(connections: 2_000, seconds: 20)
    }

    @Option(help: "Concurrent connections, one call each.") var connections = 10_000
    @Option(help: "Seconds every call streams (a frame a second).") var seconds = 60
    @Option(name: .customLong("flush-ms"), help: "The server's ledger flush interval (default: the server's default).") var flushMilliseconds: Int?
    @Flag(help: "A smaller run for regression checks.") var quick = false

    static let latencyTargetMilliseconds = 250.0
    static let memoryTargetBytes = 512 << 20

    func run() throws {
        print(BenchmarkFigure.render(try Self.measure(quick ? .quick : Scale(connections: connections, seconds: seconds, flushMilliseconds: flushMilliseconds))))
    }

    static func measure(_ scale: Scale) throws -> [BenchmarkFigure] {
        let fileLimit = setOpenFileLimit(forConnections: scale.connections)
        guard fileLimit > scale.connections + 64 else {
            throw ValidationError("the open-file limit is \(fileLimit); \(scale.connections) connections need more (raise it with ulimit -n)")
        }
        let scratch = try BenchmarkDatabase.create()
        defer { scratch.drop() }
        let database = try PostgresConnection(scratch.options)
        let token = try TokenStore(connection: database).create(name: "bench", kind: .ingest)
        print("live-calls: \(scale.connections) connections, one call each, a frame per second for \(scale.seconds) s (open-file limit \(fileLimit))")
        let server = try BenchmarkServer(database: scratch.options, connections: scale.connections, flushMilliseconds: scale.flushMilliseconds)
        let load = try LiveCallsLoad(endpoint: ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: token), connections: scale.connections)
        let connected = load.connectAll(perSecond: 2_000, timeoutSeconds: 60)
        print("  \(connected) of \(scale.connections) connected and admitted; streaming…")
        var peakResident = 0
        let cpu = CPUSampler(serverPID: server.pid)
        load.stream(seconds: scale.seconds) { peakResident = max(peakResident, server.residentBytes?.now ?? 0) }
        let cpuUse = cpu.summary()
        let settled = load.waitForAcks(timeoutSeconds: 15)
        let report = load.report()
        load.shutdown()
        server.stop()
        let stored = try database.query("SELECT count(*) AS n FROM api_call_events").single().decode("n", as: Int.self)
        let p99 = report.latencyMilliseconds(0.99)
        let problems = report.errors + report.disconnects + (scale.connections - connected) + (settled ? 0 : 1)
        return [
            BenchmarkFigure("connections live", "\(connected) of \(scale.connections)"),
            BenchmarkFigure("frames sent / acknowledged / stored", "\(report.sent) / \(report.acknowledged) / \(stored)"),
            BenchmarkFigure("ack latency p50 / p99 / max", String(format: "%.1f / %.1f / %.1f ms", report.latencyMilliseconds(0.5), p99, report.latencyMilliseconds(1))),
            BenchmarkFigure("ack latency p99", String(format: "%.1f ms", p99), target: "≤ 250 ms", passed: p99 <= latencyTargetMilliseconds),
            BenchmarkFigure("server RSS (peak sampled)", "\(peakResident >> 20) MiB", target: "≤ 512 MiB", passed: peakResident <= memoryTargetBytes),
            BenchmarkFigure("errors, drops, failed connects, unacknowledged", "\(report.errors), \(report.disconnects), \(scale.connections - connected), \(report.sent - report.acknowledged)",
                            target: "all zero, all stored", passed: problems == 0 && report.sent == report.acknowledged && stored == report.sent),
            BenchmarkFigure("CPU while streaming", cpuUse),
        ]
    }
}

/// One call per connection, a frame a second per call, the calls' frames spread evenly over each second.
final class LiveCallsLoad: Sendable {
    struct Call {
        var id: String
        var connected = false
        var accepted = false
        var frames = SentFrames()
    }

    struct State {
        var calls: [Int: Call] = [:]
        var latencies: [UInt64] = []
        var errors = 0
        var disconnects = 0
        var streaming = false
        var firstError: String?
    }

    struct Report {
        var sent: Int
        var acknowledged: Int
        var errors: Int
        var disconnects: Int
        var latencies: [UInt64]

        func latencyMilliseconds(_ q: Double) -> Double {
            latencies.nearestRank(q).map { Double($0) / 1e6 } ?? .infinity
        }
    }

    private let state = Locked(State())
    private let client: WebSocketClient
    private let endpoint: ClientEndpoint
    private let count: Int
    private let ids = Mutex<[ClientConnectionID]>([])

    init(endpoint: ClientEndpoint, connections: Int) throws {
        self.endpoint = endpoint
        count = connections
        let state = state
        client = try WebSocketClient { id, event in
            LiveCallsLoad.handle(id, event, state)
        }
    }

    private static func handle(_ id: ClientConnectionID, _ event: ClientEvent, _ state: Locked<State>) {
        state.withLock { state in
            switch event {
            case .connected:
                state.calls[id.rawValue]?.connected = true
            case .message(let text):
                if let (_, seq) = parseAck(text) {
                    state.latencies += state.calls[id.rawValue]?.frames.acknowledge(through: seq, at: DispatchTime.now().uptimeNanoseconds) ?? []
                } else if text.hasPrefix(#"{"type":"call.accepted""#) {
                    state.calls[id.rawValue]?.accepted = true
                } else if text.hasPrefix(#"{"type":"error""#) || text.hasPrefix(#"{"type":"call.rejected""#) {
                    state.errors += 1
                    if state.firstError == nil { state.firstError = text }
                }
            case .disconnected, .connectFailed, .closeReceived:
                if state.streaming { state.disconnects += 1 }
            }
        }
    }

    /// Opens every connection at `perSecond`, each starting its call; returns how many were admitted.
    func connectAll(perSecond: Int, timeoutSeconds: Int) -> Int {
        let batch = max(1, perSecond / 10)
        for start in stride(from: 0, to: count, by: batch) {
            for index in start..<min(start + batch, count) {
                let id = client.connect(to: endpoint)
                state.withLock { $0.calls[id.rawValue] = Call(id: "LIVE-\(index)") }
                ids.withLock { $0.append(id) }
                client.send(#"{"type":"call.start","call_id":"LIVE-\#(index)","user_id":"live-user-\#(index)"}"#, on: id)
            }
            usleep(100_000)
        }
        let deadline = Date().addingTimeInterval(Double(timeoutSeconds))
        while Date() < deadline {
            if state.withLock({ $0.calls.values.allSatisfy(\.accepted) }) { break }
            usleep(100_000)
        }
        return state.withLock { $0.calls.values.count { $0.accepted } }
    }

    /// Every call sends a frame a second for `seconds`, the calls spread evenly over each second
    /// and sent in 10 ms slots (one wake per slot, not per frame); `sample` runs once a second.
    func stream(seconds: Int, sample: () -> Void) {
        let connections = ids.withLock { $0 }
        state.withLock { $0.streaming = true }
        let slot: UInt64 = 10_000_000
        let slotsPerSecond = 100
        let started = DispatchTime.now().uptimeNanoseconds
        for round in 0..<seconds {
            let timestamp = Int(Date().timeIntervalSince1970)
            for slotIndex in 0..<slotsPerSecond {
                let due = started + (UInt64(round * slotsPerSecond + slotIndex)) * slot
                let now = DispatchTime.now().uptimeNanoseconds
                if due > now { usleep(UInt32((due - now) / 1_000)) }
                let range = connections.count * slotIndex / slotsPerSecond..<connections.count * (slotIndex + 1) / slotsPerSecond
                let sending: [(Int, ClientConnectionID, Int)] = state.withLock { state in
                    let sentAt = DispatchTime.now().uptimeNanoseconds
                    return range.compactMap { index in
                        let id = connections[index]
                        guard state.calls[id.rawValue]?.accepted == true else { return nil }
                        state.calls[id.rawValue]!.frames.recordSent(at: sentAt)
                        return (index, id, state.calls[id.rawValue]!.frames.count)
                    }
                }
                for (index, id, seq) in sending {
                    client.send(#"{"type":"usage","call_id":"LIVE-\#(index)","seq":\#(seq),"ts":\#(timestamp),"service":"elevenlabs","operation":"tts_generation","model":"eleven_turbo_v2_5","amount":"100","unit":"characters"}"#, on: id)
                }
            }
            sample()
        }
    }

    /// Waits until every frame sent is acknowledged.
    func waitForAcks(timeoutSeconds: Int) -> Bool {
        let deadline = Date().addingTimeInterval(Double(timeoutSeconds))
        while Date() < deadline {
            if state.withLock({ $0.calls.values.allSatisfy { Int($0.frames.acked) == $0.frames.count } }) { return true }
            usleep(50_000)
        }
        return false
    }

    func report() -> Report {
        state.withLock { state in
            if let firstError = state.firstError { print("  first error: \(firstError)") }
            return Report(sent: state.calls.values.reduce(0) { $0 + $1.frames.count }, acknowledged: state.calls.values.reduce(0) { $0 + Int($1.frames.acked) },
                          errors: state.errors, disconnects: state.disconnects, latencies: state.latencies.sorted())
        }
    }

    func shutdown() {
        state.withLock { $0.streaming = false }
        client.shutdown()
    }
}
