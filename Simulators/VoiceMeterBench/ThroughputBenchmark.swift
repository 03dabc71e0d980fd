import ArgumentParser
import Foundation
import PostgresClient
import VoiceMeterSimulation
import VoiceMeterStore
import WebSocketTransport

/// Committed-and-acknowledged frames per second through the whole pipeline, next to the limit of
/// its SQL path and the seed's design, measured in one run, each on a fresh database.
struct ThroughputBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "e2e",
        abstract: "End-to-end throughput (WebSocket → pricing → ledger → ack) next to the SQL path's limit and the seed's design.",
        discussion: """
            The server runs in a child process (so its CPU is measured apart); the load generator keeps \
            --window unacknowledged frames on each connection. Targets: at least 0.7× the limit and 10× the \
            seed's design. The per-connection rate limit is raised for the run (many calls share a connection).
            """
    )

    struct Scale {
        var connections = 8
        var callsPerConnection = 16
        var window = 1_000
        var warmupSeconds = 3
        var seconds = 20
        var seedEvents = 4_000

        static let quick = Scale(connections: 8, callsPerConnection: 16, window: 1_000, warmupSeconds: 2, seconds: 8, seedEvents: 1_500)
    }

    @Option(help: "WebSocket connections.") var connections = 8
    @Option(help: "Calls streaming on each connection.") var callsPerConnection = 16
    @Option(help: "Unacknowledged frames allowed per connection.") var window = 1_000
    @Option(help: "Measured seconds (after the warm-up).") var seconds = 20
    @Flag(help: "A smaller run for regression checks.") var quick = false

    func run() throws {
        var scale = quick ? Scale.quick : Scale()
        if !quick {
            scale.connections = connections
            scale.callsPerConnection = callsPerConnection
            scale.window = window
            scale.seconds = seconds
        }
        print(BenchmarkFigure.render(try Self.measure(scale)))
    }

    static func measure(_ scale: Scale) throws -> [BenchmarkFigure] {
        let scratch = try BenchmarkDatabase.create()
        defer { scratch.drop() }
        let database = try PostgresConnection(scratch.options)
        let token = try TokenStore(connection: database).create(name: "bench", kind: .ingest)
        print("e2e: \(scale.connections) connections × \(scale.callsPerConnection) calls, window \(scale.window) frames per connection, \(scale.seconds) s measured after \(scale.warmupSeconds) s")

        let server = try BenchmarkServer(database: scratch.options, connections: scale.connections, messagesPerSecond: 1_000_000)
        let load = try ThroughputLoad(endpoint: ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: token),
                                      connections: scale.connections, callsPerConnection: scale.callsPerConnection, window: scale.window, runTag: "t")
        sleep(UInt32(scale.warmupSeconds))
        let cpu = CPUSampler(serverPID: server.pid)
        let ackedBefore = load.acknowledged
        let started = ContinuousClock.now
        load.measure(true)
        sleep(UInt32(scale.seconds))
        load.measure(false)
        let elapsed = (ContinuousClock.now - started).seconds
        let endToEnd = Double(load.acknowledged - ackedBefore) / elapsed
        let cpuUse = cpu.summary()
        let rss = server.residentBytes
        load.stopSending()
        let drainDeadline = Date().addingTimeInterval(30)
        while load.inflight > 0, Date() < drainDeadline { usleep(10_000) }
        let latencies = load.latencies
        let (sent, acknowledged, errors) = (load.sent, load.acknowledged, load.errors)
        load.shutdown()
        server.stop()
        let stored = try database.query("SELECT count(*) AS n FROM api_call_events").single().decode("n", as: Int.self)

        print("  measuring the limit (as many rows, \(stored), by the same SQL path into a fresh database, 2 connections like the server's 2 writers) and the seed's design…")
        // The rows the end-to-end run wrote, as many of them, into a fresh database like its own
        // (so the limit runs about as long and its tables grow alike): its calls, each of its own
        // user, taking turns. The end-to-end database goes first: its autovacuum would compete.
        scratch.drop()
        let limitDatabase = try BenchmarkDatabase.create(purpose: "limit")
        defer { limitDatabase.drop() }
        let limitConnection = try PostgresConnection(limitDatabase.options)
        let book = try PriceStore(connection: limitConnection).load()
        let calls = scale.connections * scale.callsPerConnection
        let limit = try LedgerPaths.measureLimit(LedgerPaths.events(stored, prefix: "limit", book: book, interleaving: calls),
                                                 limitDatabase.options, connections: 2, batch: 2_000)
        let seed = try LedgerPaths.measureSeedDesign(LedgerPaths.events(scale.seedEvents, prefix: "seed", book: book), limitConnection)

        func milliseconds(_ q: Double) -> String {
            latencies.nearestRank(q).map { String(format: "%.1f", Double($0) / 1e6) } ?? "n/a"
        }
        return [
            BenchmarkFigure("end to end (committed and acknowledged)", String(format: "%.0f frames/s", endToEnd)),
            BenchmarkFigure("limit (SQL path driven directly, 2 connections)", String(format: "%.0f events/s", limit)),
            BenchmarkFigure("seed design (one INSERT per event)", String(format: "%.0f events/s", seed)),
            // Ratios are shown rounded down, so a ratio shown at its target has met it (0.698 reads 0.69).
            BenchmarkFigure("end to end / limit", String(format: "%.2f", (endToEnd / limit * 100).rounded(.down) / 100), target: "≥ 0.70",
                            passed: endToEnd / limit >= 0.7),
            BenchmarkFigure("end to end / seed design", String(format: "%.1f×", (endToEnd / seed * 10).rounded(.down) / 10), target: "≥ 10×",
                            passed: endToEnd / seed >= 10),
            BenchmarkFigure("ack latency p50 / p99 / max", "\(milliseconds(0.5)) / \(milliseconds(0.99)) / \(milliseconds(1)) ms"),
            BenchmarkFigure("CPU while measuring", cpuUse),
            BenchmarkFigure("server memory (RSS now / peak)", rss.map { "\($0.now >> 20) / \($0.peak >> 20) MiB" } ?? "n/a"),
            BenchmarkFigure("every frame sent was committed once", "sent \(sent), acknowledged \(acknowledged), stored \(stored), errors \(errors.count)",
                            target: "all equal, no errors", passed: sent == acknowledged && acknowledged == stored && errors.isEmpty),
        ]
    }
}
