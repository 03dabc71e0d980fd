import EmbeddedPostgres
import Foundation
import Logging
import PostgresClient
import Testing
import VoiceMeterDomain
import VoiceMeterServer
import VoiceMeterStore
import VoiceMeterTestSupport
import WebSocketTransport

/// The highest seq acknowledged for a call in a client's messages.
func highestAck(_ messages: [String], call: String) -> Int {
    messages.compactMap { message -> Int? in
        guard message.hasPrefix(#"{"type":"ack","call_id":"\#(call)","seq":"#) else { return nil }
        return Int(message.split(separator: ":").last!.dropLast())
    }.max() ?? 0
}

@Suite("Outages: nothing acknowledged is lost, nothing is counted twice", .serialized)
struct OutageTests {
    @Test("PostgreSQL crashes and restarts mid-stream: the server recovers by itself and the ledger reconciles")
    func databaseCrashMidStream() throws {
        let cluster = try TestPostgres.privateCluster()
        defer { try? cluster.destroy() }
        let options = try cluster.start()
        let database = try PostgresConnection(options)
        try Migrator(connection: database, migrations: try TestPostgres.migrations()).migrate()
        let token = try TokenStore(connection: database).create(name: "pipeline", kind: .ingest)
        var configuration = ServerConfiguration(database: options)
        configuration.listener.port = 0
        configuration.writerFlushIntervalMilliseconds = 20
        let server = try VoiceMeterServer.start(configuration: configuration, migrations: try TestPostgres.migrations(), logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        defer { server.shutdown() }

        let recorder = ClientRecorder()
        let client = try WebSocketClient { recorder.record($0, $1) }
        defer { client.shutdown() }
        let connection = client.connect(to: ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: token))
        let messages = canonicalCallMessages("CAOUT")
        for message in messages[0...30] { client.send(message, on: connection) }
        #expect(recorder.wait { highestAck(recorder.messages(of: connection), call: "CAOUT") == 30 })

        try cluster.stop(immediately: true)
        for message in messages[31...60] { client.send(message, on: connection) }
        usleep(1_500_000)
        let ackedDuringOutage = highestAck(recorder.messages(of: connection), call: "CAOUT")
        _ = try cluster.start()
        for message in messages[61...] { client.send(message, on: connection) }

        #expect(ackedDuringOutage == 30)
        #expect(recorder.wait(seconds: 20) { recorder.messages(of: connection).contains { $0.contains(#""type":"call.summary""#) } })
        #expect(recorder.messages(of: connection).last?.contains(#""cost":"0.4045""#) == true)
        let after = try PostgresConnection(options)
        let ledger = try after.query("SELECT count(*) AS n, count(DISTINCT seq) AS d, sum(total_cost) AS cost FROM api_call_events").single()
        #expect(try ledger.decode("n", as: Int.self) == 70)
        #expect(try ledger.decode("d", as: Int.self) == 70)
        #expect(try ledger.decode("cost", as: ExactDecimal.self) == ExactDecimal("0.4045")!)
        let summary = try after.query("SELECT total_cost AS cost, event_count AS n FROM cost_summaries WHERE summary_type = 'call'").single()
        #expect(try summary.decode("cost", as: ExactDecimal.self) == ExactDecimal("0.4045")!)
        #expect(try summary.decode("n", as: Int.self) == 70)
    }

    @Test("the server is killed with SIGKILL mid-call; the client resends what was not acknowledged to a new server")
    func serverKilledMidStream() throws {
        let options = try TestPostgres.migratedDatabase()
        let database = try PostgresConnection(options)
        let token = try TokenStore(connection: database).create(name: "pipeline", kind: .ingest)
        let messages = canonicalCallMessages("CAKILL")
        let recorder = ClientRecorder()
        let client = try WebSocketClient { recorder.record($0, $1) }
        defer { client.shutdown() }

        let first = try ServerProcess(database: options)
        let before = client.connect(to: ClientEndpoint(host: "127.0.0.1", port: first.port, bearerToken: token))
        for message in messages[0...40] { client.send(message, on: before) }
        #expect(recorder.wait { highestAck(recorder.messages(of: before), call: "CAKILL") == 40 })
        for message in messages[41...55] { client.send(message, on: before) }
        first.kill()
        #expect(recorder.wait { recorder.events(of: before).contains(.disconnected) })
        let acked = highestAck(recorder.messages(of: before), call: "CAKILL")

        // What a careful pipeline does: resume the call elsewhere and resend everything unacknowledged.
        let second = try ServerProcess(database: options)
        defer { second.kill() }
        let after = client.connect(to: ClientEndpoint(host: "127.0.0.1", port: second.port, bearerToken: token))
        client.send(messages[0], on: after)
        for message in messages[(acked + 1)...] { client.send(message, on: after) }
        #expect(recorder.wait(seconds: 20) { recorder.messages(of: after).contains { $0.contains(#""type":"call.summary""#) } })
        #expect(recorder.messages(of: after).last?.contains(#""cost":"0.4045""#) == true, "\(recorder.messages(of: after).last ?? "")")

        let ledger = try database.query("SELECT count(*) AS n, sum(total_cost) AS cost FROM api_call_events WHERE call_id = 'CAKILL'").single()
        #expect(try ledger.decode("n", as: Int.self) == 70)
        #expect(try ledger.decode("cost", as: ExactDecimal.self) == ExactDecimal("0.4045")!)
        let summary = try database.query("SELECT total_cost AS cost FROM cost_summaries WHERE summary_type = 'call' AND call_id = 'CAKILL'").single()
        #expect(try summary.decode("cost", as: ExactDecimal.self) == ExactDecimal("0.4045")!)
    }
}

/// `voicemeter serve` as a child process on a free port, for tests that kill it.
final class ServerProcess {
    let pid: pid_t
    let port: Int
    private let logPath: String

    init(database: PostgresConnectionOptions) throws {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("voicemeter").path
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw ServerProcessError.notBuilt(binary) }
        logPath = FileManager.default.temporaryDirectory.appendingPathComponent("voicemeter-serve-\(UUID().uuidString.prefix(8)).log").path
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let arguments = [binary, "serve", "--listen", "127.0.0.1:0", "--database-url", database.conninfo, "--flush-ms", "20"]
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        guard posix_spawn(&child, binary, &actions, nil, argv, environ) == 0 else { throw ServerProcessError.notBuilt(binary) }
        pid = child
        var found: Int?
        for _ in 0..<300 where found == nil {
            usleep(50_000)
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            if let range = log.range(of: "listening on ws://127.0.0.1:") {
                found = Int(log[range.upperBound...].prefix { $0.isNumber })
            }
        }
        guard let found else {
            Glibc.kill(child, SIGKILL)
            throw ServerProcessError.didNotStart((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")
        }
        port = found
    }

    /// SIGKILL: no shutdown, no flush.
    func kill() {
        Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }
}

enum ServerProcessError: Error {
    case notBuilt(String)
    case didNotStart(String)
}

@Suite("Backpressure", .serialized)
struct BackpressureTests {
    @Test("while PostgreSQL is away the writer's queue stays bounded: sockets stop being read, nothing is refused or lost")
    func flowControlDuringOutage() throws {
        let cluster = try TestPostgres.privateCluster()
        defer { try? cluster.destroy() }
        let options = try cluster.start()
        let database = try PostgresConnection(options)
        try Migrator(connection: database, migrations: try TestPostgres.migrations()).migrate()
        let token = try TokenStore(connection: database).create(name: "pipeline", kind: .ingest)
        var configuration = ServerConfiguration(database: options)
        configuration.listener.port = 0
        configuration.writerFlushIntervalMilliseconds = 20
        configuration.writerQueueEventsMax = 40
        let server = try VoiceMeterServer.start(configuration: configuration, migrations: try TestPostgres.migrations(),
                                                logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        defer { server.shutdown() }
        let recorder = ClientRecorder()
        let client = try WebSocketClient { recorder.record($0, $1) }
        defer { client.shutdown() }
        let connection = client.connect(to: ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: token))
        let messages = canonicalCallMessages("CAFLOW")
        client.send(messages[0], on: connection)
        #expect(recorder.wait { recorder.messages(of: connection).first?.contains("call.accepted") == true })

        try cluster.stop(immediately: true)
        for message in messages[1...] { client.send(message, on: connection) }
        usleep(1_000_000)
        _ = try cluster.start()

        #expect(recorder.wait(seconds: 20) { recorder.messages(of: connection).contains { $0.contains(#""type":"call.summary""#) } })
        #expect(!recorder.messages(of: connection).contains { $0.contains(#""code":"overloaded""#) })
        #expect(recorder.messages(of: connection).last?.contains(#""cost":"0.4045""#) == true)
        #expect(try PostgresConnection(options).query("SELECT count(*) AS n FROM api_call_events").single().decode("n", as: Int.self) == 70)
    }
}

@Suite("Graceful shutdown", .serialized)
struct GracefulShutdownTests {
    @Test("SIGTERM mid-stream: everything taken is committed and acknowledged, connections close with 1001, exit 0")
    func sigtermDrains() throws {
        let options = try TestPostgres.migratedDatabase()
        let database = try PostgresConnection(options)
        let token = try TokenStore(connection: database).create(name: "pipeline", kind: .ingest)
        let recorder = ClientRecorder()
        let client = try WebSocketClient { recorder.record($0, $1) }
        defer { client.shutdown() }
        let server = try ServerProcess(database: options)
        let connection = client.connect(to: ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: token))
        let messages = canonicalCallMessages("CATERM")
        client.send(messages[0], on: connection)
        #expect(recorder.wait { recorder.messages(of: connection).first?.contains("call.accepted") == true })
        for message in messages[1...60] { client.send(message, on: connection) }
        usleep(20_000)
        let started = Date()
        let status = server.terminate()
        #expect(status == 0)
        #expect(Date().timeIntervalSince(started) < 15)
        #expect(recorder.wait { recorder.events(of: connection).contains(.closeReceived(code: 1001)) })
        let acked = highestAck(recorder.messages(of: connection), call: "CATERM")
        let stored = try database.query("SELECT count(*) AS n, coalesce(max(seq), 0) AS top FROM api_call_events").single()
        #expect(acked > 0)
        #expect(try stored.decode("n", as: Int.self) == acked)
        #expect(try stored.decode("top", as: Int.self) == acked)
    }
}

extension ServerProcess {
    /// SIGTERM, then the exit status once it exits.
    func terminate() -> Int32 {
        Glibc.kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}
