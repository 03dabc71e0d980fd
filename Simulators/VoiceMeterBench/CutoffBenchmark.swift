import ArgumentParser
import EmbeddedPostgres
import Foundation
import Logging
import PostgresClient
import Synchronization
import VoiceMeterDatabase
import VoiceMeterDomain
import VoiceMeterServer
import VoiceMeterSimulation
import VoiceMeterStore
import WebSocketTransport

/// Time from sending the frame that crosses a per-call limit to receiving `budget.cutoff`, with
/// many live calls streaming at once through a real server and real PostgreSQL.
struct CutoffBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cutoff",
        abstract: "Cutoff latency (crossing frame sent → budget.cutoff received) with many live calls; target p99 < 50 ms.",
        discussion: "Uses DATABASE_URL, or a private PostgreSQL under /tmp/voicemeter-bench-cluster. Each run uses a fresh database."
    )

    @Option(help: "Live calls.") var calls = 1_000
    @Option(help: "WebSocket connections carrying them.") var connections = 50
    @Option(help: "Milliseconds between a call's frames (the calls' frames are spread over this interval).") var roundMilliseconds = 250
    @Option(help: "The ledger writer's flush interval in milliseconds.") var flushMilliseconds = 100

    static let targetMilliseconds = 50.0

    func run() async throws {
        print(BenchmarkFigure.render(try await Self.measure(calls: calls, connections: connections, roundMilliseconds: roundMilliseconds,
                                                      flushMilliseconds: flushMilliseconds)))
    }

    static func measure(calls: Int, connections: Int, roundMilliseconds: Int, flushMilliseconds: Int) async throws -> [BenchmarkFigure] {
        let scratch = try BenchmarkDatabase.create()
        defer { scratch.drop() }
        let database = try PostgresConnection(scratch.options)
        let token = try TokenStore(connection: database).create(name: "bench", kind: .ingest)
        var configuration = ServerConfiguration.loopback(database: scratch.options, connections: connections)
        configuration.writerFlushIntervalMilliseconds = flushMilliseconds
        // $0.10 per call: ElevenLabs frames of 100 characters ($0.015) cross it with the 7th frame.
        configuration.defaultBudget = BudgetPolicy(callLimit: ExactDecimal("0.10")!, dayLimit: nil, monthLimit: ExactDecimal(1_000_000))
        let server = try await VoiceMeterServer.start(configuration: configuration, migrations: try MigrationSet.bundled(),
                                                      logger: Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() })
        return try await server.serving {
            try stream(to: ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: token), calls: calls, connections: connections,
                       roundMilliseconds: roundMilliseconds)
        }
    }

    /// Streams the calls' frames in rounds until each crosses its limit, and times its cutoff.
    private static func stream(to endpoint: ClientEndpoint, calls: Int, connections: Int, roundMilliseconds: Int) throws -> [BenchmarkFigure] {
        let cutoffs = Mutex<[String: UInt64]>([:])
        let accepted = Atomic<Int>(0)
        let client = try WebSocketClient { _, event in
            guard case .message(let text) = event else { return }
            if text.hasPrefix(#"{"type":"budget.cutoff""#), case .budgetCutoff(let callID, _, _, _)? = ServerMessage(json: text) {
                let now = DispatchTime.now().uptimeNanoseconds
                cutoffs.withLock { $0[callID] = now }
            } else if text.hasPrefix(#"{"type":"call.accepted""#) {
                accepted.add(1, ordering: .relaxed)
            }
        }
        defer { client.shutdown() }
        let links = (0..<connections).map { _ in client.connect(to: endpoint) }
        for call in 0..<calls {
            client.send(#"{"type":"call.start","call_id":"BENCH\#(call)","user_id":"user-\#(call)"}"#, on: links[call % connections])
        }
        let deadline = Date().addingTimeInterval(30)
        while accepted.load(ordering: .relaxed) < calls, Date() < deadline { usleep(10_000) }

        var crossingSent: [String: UInt64] = [:]
        // Live calls are not synchronised: each round spreads the calls' frames evenly over its interval.
        let roundNanoseconds = UInt64(roundMilliseconds) * 1_000_000
        for round in 1...8 {
            let startedRound = DispatchTime.now().uptimeNanoseconds
            for call in 0..<calls {
                let due = startedRound + roundNanoseconds * UInt64(call) / UInt64(calls)
                let now = DispatchTime.now().uptimeNanoseconds
                if due > now + 200_000 { usleep(UInt32((due - now) / 1_000)) }
                let frame = #"{"type":"usage","call_id":"BENCH\#(call)","seq":\#(round),"ts":\#(Int(Date().timeIntervalSince1970)),"service":"elevenlabs","operation":"tts_generation","model":"eleven_turbo_v2_5","amount":"100","unit":"characters"}"#
                if round == 7 { crossingSent["BENCH\(call)"] = DispatchTime.now().uptimeNanoseconds }
                client.send(frame, on: links[call % connections])
            }
            let spent = DispatchTime.now().uptimeNanoseconds - startedRound
            if spent < roundNanoseconds { usleep(UInt32((roundNanoseconds - spent) / 1_000)) }
        }
        let waitUntil = Date().addingTimeInterval(10)
        while cutoffs.withLock({ $0.count }) < calls, Date() < waitUntil { usleep(10_000) }

        let received = cutoffs.withLock { $0 }
        let latencies = crossingSent.compactMap { call, sent in received[call].map { Double($0 - sent) / 1e6 } }.sorted()
        guard !latencies.isEmpty else { throw ValidationError("no budget.cutoff arrived") }
        func percentile(_ p: Double) -> Double { latencies.nearestRank(p)! }
        print("cutoff: \(calls) live calls on \(connections) connections, a frame per call every \(roundMilliseconds) ms (spread evenly)")
        return [
            BenchmarkFigure("cutoffs received", "\(received.count) of \(calls)", target: "all", passed: received.count == calls),
            BenchmarkFigure("cutoff latency p50 / p99 / max", String(format: "%.1f / %.1f / %.1f ms", percentile(0.5), percentile(0.99), latencies.last!)),
            BenchmarkFigure("cutoff latency p99", String(format: "%.1f ms", percentile(0.99)), target: "≤ 50 ms", passed: percentile(0.99) <= targetMilliseconds),
        ]
    }
}

/// A fresh database for one benchmark run, dropped afterwards.
struct BenchmarkDatabase {
    let server: PostgresConnectionOptions
    let name: String
    var options: PostgresConnectionOptions { server.database(name) }

    /// A fresh, migrated database; `purpose` tells apart several in one run.
    static func create(purpose: String = "run") throws -> BenchmarkDatabase {
        let server: PostgresConnectionOptions
        if let url = DatabaseSelection.url(flag: nil) {
            server = PostgresConnectionOptions(connectionString: url)
        } else {
            server = try EmbeddedPostgres(.init(dataDirectory: "/tmp/voicemeter-bench-cluster")).start()
        }
        let name = "vmbench_\(getpid())_\(purpose)"
        try PostgresConnection(server.database("postgres")).runScript("CREATE DATABASE \(name)")
        let database = BenchmarkDatabase(server: server, name: name)
        try Migrator(connection: PostgresConnection(database.options),
                     migrations: try MigrationSet.bundled()).migrate()
        // What the previous measurement wrote (its WAL, its dropped database's files) reaches the
        // disk now, not during this one. Checkpointing is best effort: a DATABASE_URL role may
        // not be allowed to.
        try? PostgresConnection(server.database("postgres")).runScript("CHECKPOINT")
        sync()
        return database
    }

    func drop() {
        try? PostgresConnection(server.database("postgres")).runScript("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }
}
