import Foundation
import Logging
import PostgresClient
import Testing
import VoiceMeterDomain
import VoiceMeterServer
import VoiceMeterStore
import VoiceMeterTestSupport
import WebSocketTransport

/// A real server on a free loopback port against a fresh migrated database (or the one given).
struct RunningServer {
    let server: VoiceMeterServer
    let options: PostgresConnectionOptions
    let database: PostgresConnection
    let token: String

    /// - Parameters:
    ///   - options: a database to use (migrated here); a fresh test database when `nil`.
    ///   - prepare: runs on the database before the server starts (roles, budgets…).
    ///   - configure: adjusts the server's configuration (its database user, queue sizes…).
    init(options given: PostgresConnectionOptions? = nil, prepare: (PostgresConnection) throws -> Void = { _ in },
         configure: (inout ServerConfiguration) -> Void = { _ in }) throws {
        options = try given ?? TestPostgres.migratedDatabase()
        database = try PostgresConnection(options)
        if given != nil { try Migrator(connection: database, migrations: try TestPostgres.migrations()).migrate() }
        try prepare(database)
        token = try TokenStore(connection: database).create(name: "pipeline", kind: .ingest)
        var configuration = ServerConfiguration(database: options)
        configuration.listener.port = 0
        configuration.writerFlushIntervalMilliseconds = 20
        configuration.tokenRefreshIntervalMilliseconds = 500
        configure(&configuration)
        server = try VoiceMeterServer.start(configuration: configuration, migrations: try TestPostgres.migrations(),
                                            logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
    }

    var endpoint: ClientEndpoint { ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: token) }
}

/// A WebSocket client with one connection, recording what arrives.
final class StreamingClient {
    let recorder = ClientRecorder()
    let client: WebSocketClient
    private(set) var connection: ClientConnectionID

    init(_ endpoint: ClientEndpoint) throws {
        let recorder = recorder
        client = try WebSocketClient { recorder.record($0, $1) }
        connection = client.connect(to: endpoint)
    }

    deinit { client.shutdown() }

    func send(_ messages: some Sequence<String>) {
        for message in messages { client.send(message, on: connection) }
    }

    /// Opens a new connection (to the same or another server); later sends go there.
    func reconnect(to endpoint: ClientEndpoint) {
        connection = client.connect(to: endpoint)
    }

    var messages: [String] { recorder.messages(of: connection) }
    var events: [ClientEvent] { recorder.events(of: connection) }

    func wait(seconds: Double = 10, until condition: ([String]) -> Bool) -> Bool {
        recorder.wait(seconds: seconds) { condition(self.messages) }
    }

    /// Waits for the call's `call.summary`.
    func waitForSummary(seconds: Double = 20) -> Bool {
        wait(seconds: seconds) { $0.contains { $0.contains(#""type":"call.summary""#) } }
    }

    func highestAck(call: String) -> Int { VoiceMeterServerTests.highestAck(messages, call: call) }
}

/// Seed 002's 5-minute call as protocol messages.
/// `startingAt` is the call's start in Unix seconds (default 2026-11-22T18:00:00Z); tests whose
/// budgets or quotas depend on today pass the current time.
func canonicalCallMessages(_ callID: String, user: String = "7b0f3a0e-5a7e-4a53-9a40-6a3f7d1b2c10", startingAt start: Int = 1_795_370_400) -> [String] {
    var messages = [#"{"type":"call.start","call_id":"\#(callID)","user_id":"\#(user)","persona_id":"brad","ts":\#(start),"revenue":"4.99"}"#]
    var seq = 0
    func usage(_ service: String, _ operation: String, _ model: String?, _ unit: String, _ amount: String, _ offset: Int) {
        seq += 1
        let modelField = model.map { #","model":"\#($0)""# } ?? ""
        messages.append(#"{"type":"usage","call_id":"\#(callID)","seq":\#(seq),"ts":\#(start + offset),"service":"\#(service)","operation":"\#(operation)","amount":"\#(amount)","unit":"\#(unit)"\#(modelField)}"#)
    }
    for minute in 0..<5 {
        for half in 0..<2 { usage("twilio", "voice_outbound", nil, "seconds", "30", minute * 60 + half * 30 + 30) }
        for tenth in 0..<6 { usage("deepgram", "stt_streaming", "nova-2", "seconds", "10", minute * 60 + tenth * 10 + 10) }
        usage("cerebras", "chat_completion", "llama3.1-8b", "input_tokens", "6000", minute * 60 + 20)
        usage("cerebras", "chat_completion", "llama3.1-8b", "output_tokens", "4000", minute * 60 + 21)
        for sentence in 0..<4 { usage("elevenlabs", "tts_generation", "eleven_turbo_v2_5", "characters", "100", minute * 60 + sentence * 15 + 5) }
    }
    messages.append(#"{"type":"call.end","call_id":"\#(callID)","ts":\#(start + 300)}"#)
    return messages
}

@Suite("The metering server end to end", .serialized)
struct ServerPipelineTests {
    @Test("the canonical call streams in, is acknowledged after commit and summarized exactly")
    func canonicalCall() throws {
        let running = try RunningServer()
        defer { running.server.shutdown() }
        let client = try StreamingClient(running.endpoint)
        client.send(canonicalCallMessages("CA0001"))

        #expect(client.waitForSummary())
        let messages = client.messages
        #expect(messages.first == #"{"type":"call.accepted","call_id":"CA0001","call_limit":"10","month_spent":"0","month_limit":"100"}"#)
        #expect(messages.contains(#"{"type":"ack","call_id":"CA0001","seq":70}"#))
        #expect(messages.last == #"{"type":"call.summary","call_id":"CA0001","cost":"0.4045","by_service":{"cerebras":"0.005","deepgram":"0.0295","elevenlabs":"0.3","twilio":"0.07"},"revenue":"4.99","payment_fee":"0.46966","margin":"4.11584"}"#)
        let stored = try running.database.query("SELECT count(*) AS n, sum(total_cost) AS cost FROM api_call_events WHERE call_id = 'CA0001'").single()
        #expect(try stored.decode("n", as: Int.self) == 70)
        #expect(try stored.decode("cost", as: ExactDecimal.self) == ExactDecimal("0.4045")!)
        let call = try running.database.query("SELECT status, ended_at::text AS ended FROM calls WHERE call_id = 'CA0001'").single()
        #expect(try call.decode("status", as: String.self) == "completed")
    }

    @Test("with several metering shards, the calls of users on every shard are acknowledged and summarized exactly")
    func severalShards() throws {
        let running = try RunningServer(configure: { $0.meteringShards = 3 })
        defer { running.server.shutdown() }
        let client = try StreamingClient(running.endpoint)
        let calls = (1...6).map { (call: "SH\($0)", user: "shard-user-\($0)") }
        let scripts = calls.map { canonicalCallMessages($0.call, user: $0.user) }
        // Interleaved, so every commit holds events of several shards' users.
        for index in 0..<scripts[0].count { client.send(scripts.map { $0[index] }) }

        #expect(client.wait(seconds: 30) { messages in messages.filter { $0.contains(#""type":"call.summary""#) }.count == calls.count })
        for (call, _) in calls {
            #expect(client.highestAck(call: call) == 70)
            #expect(client.messages.contains { $0.hasPrefix(#"{"type":"call.summary","call_id":"\#(call)","cost":"0.4045""#) })
        }
        let stored = try running.database.query("SELECT count(*) AS n, sum(total_cost) AS cost FROM api_call_events").single()
        #expect(try stored.decode("n", as: Int.self) == 6 * 70)
        #expect(try stored.decode("cost", as: ExactDecimal.self) == ExactDecimal("2.427")!)
    }

    @Test("period rollups are journaled with the events, folded while running, all folded after a stop, exact throughout")
    func rollupFolding() throws {
        func periodCosts(_ database: PostgresConnection, from table: String) throws -> [String] {
            try database.query("SELECT summary_type || ' ' || total_cost::numeric(20, 4) AS row FROM \(table) WHERE summary_type <> 'call' ORDER BY 1")
                .map { try $0.decode("row") }
        }
        let expected = ["platform_day 0.4045", "user_day 0.4045", "user_month 0.4045"]
        // Folding every second: the rows appear without a shutdown.
        let folding = try RunningServer(configure: { $0.rollupFoldSeconds = 1 })
        let first = try StreamingClient(folding.endpoint)
        first.send(canonicalCallMessages("CAFOLD1"))
        #expect(first.waitForSummary())
        #expect(try periodCosts(folding.database, from: "period_rollups") == expected)
        let deadline = Date().addingTimeInterval(5)
        while try periodCosts(folding.database, from: "cost_summaries") != expected, Date() < deadline { usleep(100_000) }
        #expect(try periodCosts(folding.database, from: "cost_summaries") == expected)
        folding.server.shutdown()

        // Stopping at once, whatever the sweep reached: after the stop everything is folded.
        let stopping = try RunningServer(configure: { $0.rollupFoldSeconds = 3_600 })
        let second = try StreamingClient(stopping.endpoint)
        second.send(canonicalCallMessages("CAFOLD2"))
        #expect(second.waitForSummary())
        #expect(try periodCosts(stopping.database, from: "period_rollups") == expected)
        stopping.server.shutdown()
        #expect(try periodCosts(stopping.database, from: "cost_summaries") == expected)
        #expect(try stopping.database.query("SELECT 1 FROM rollup_journal").isEmpty)
    }

    @Test("a resent frame is acknowledged again and stored once; different content for a seq is seq_conflict")
    func resendAndConflict() throws {
        let running = try RunningServer()
        defer { running.server.shutdown() }
        let client = try StreamingClient(running.endpoint)
        let messages = canonicalCallMessages("CA0002")
        client.send(messages[0...1])
        #expect(client.wait { $0.contains(#"{"type":"ack","call_id":"CA0002","seq":1}"#) })
        client.send([messages[1], messages[1].replacingOccurrences(of: #""amount":"30""#, with: #""amount":"31""#)])
        #expect(client.wait { $0.filter { $0 == #"{"type":"ack","call_id":"CA0002","seq":1}"# }.count == 2 })
        #expect(client.wait { $0.contains { $0.contains(#""code":"seq_conflict""#) } })
        #expect(try running.database.query("SELECT count(*) AS n FROM api_call_events").single().decode("n", as: Int.self) == 1)
    }

    @Test("usage for a call that was never started is unknown_call")
    func unknownCall() throws {
        let running = try RunningServer()
        defer { running.server.shutdown() }
        let client = try StreamingClient(running.endpoint)
        client.send([canonicalCallMessages("CA0003")[1]])
        #expect(client.wait { $0.contains { $0.contains(#""code":"unknown_call""#) && $0.contains(#""seq":1"#) } })
        // Kept for audit, not billed.
        #expect(client.wait { _ in
            (try? running.database.query("SELECT count(*) AS n FROM rejected_frames WHERE call_id = 'CA0003' AND seq = 1").single().decode("n", as: Int.self)) == 1
        })
        #expect(try running.database.query("SELECT count(*) AS n FROM api_call_events").single().decode("n", as: Int.self) == 0)
    }

    @Test("a created token authenticates; once revoked it is refused with 401 within seconds")
    func tokenRevocation() throws {
        let running = try RunningServer()
        defer { running.server.shutdown() }
        let accepted = try RawSocket(port: running.server.port)
        accepted.sendUpgrade(token: running.token)
        #expect(accepted.readHeaders().hasPrefix("HTTP/1.1 101"))
        try TokenStore(connection: running.database).revoke(name: "pipeline")
        let refused = ClientRecorder().wait(seconds: 5) {
            guard let socket = try? RawSocket(port: running.server.port) else { return false }
            socket.sendUpgrade(token: running.token)
            return socket.readHeaders().contains(" 401 ")
        }
        #expect(refused)
    }

    @Test("/healthz and /readyz answer on the listener")
    func health() throws {
        let running = try RunningServer()
        defer { running.server.shutdown() }
        for (path, expected) in [("/healthz", #"{"status":"ok"}"#), ("/readyz", #"{"status":"ready","reason":"ok"}"#)] {
            let socket = try RawSocket(port: running.server.port)
            socket.send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            let (response, _) = socket.readUntilClosed()
            #expect(response.hasPrefix("HTTP/1.1 200"), "\(path): \(response)")
            #expect(response.contains(expected))
        }
    }
}
