import EmbeddedPostgres
import Foundation
import Logging
import PostgresClient
import Testing
import VoiceMeterDomain
import VoiceMeterMetering
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
    /// The server's clock: it reads `TestTime.start` when the server starts, unless `configure`
    /// set another. The test stamps its messages and picks its periods with it.
    let clock: any MeteringClock

    /// - Parameters:
    ///   - options: a database to use (migrated here); a fresh test database when `nil`.
    ///   - prepare: runs on the database before the server starts (roles, budgets…).
    ///   - configure: adjusts the server's configuration (its database user, queue sizes…).
    init(options given: PostgresConnectionOptions? = nil, prepare: (PostgresConnection) throws -> Void = { _ in },
         configure: (inout ServerConfiguration) -> Void = { _ in }) async throws {
        await ServerSlots.shared.take()
        do {
            try await self.init(starting: given, prepare: prepare, configure: configure)
        } catch {
            await ServerSlots.shared.give()
            throw error
        }
    }

    private init(starting given: PostgresConnectionOptions?, prepare: (PostgresConnection) throws -> Void,
                 configure: (inout ServerConfiguration) -> Void) async throws {
        options = try given ?? TestPostgres.migratedDatabase()
        database = try PostgresConnection(options)
        if given != nil { try Migrator(connection: database, migrations: try TestPostgres.migrations()).migrate() }
        try prepare(database)
        token = try TokenStore(connection: database).create(name: "pipeline", kind: .ingest)
        var configuration = ServerConfiguration(database: options)
        configuration.clock = SystemMeteringClock(readingNow: TestTime.start)
        configuration.listener.port = 0
        configuration.writerFlushIntervalMilliseconds = 20
        configuration.tokenRefreshIntervalMilliseconds = 500
        // Tests replay calls from earlier in the UTC day (`callStarts`); the window's own tests set it back.
        configuration.callStartPastSeconds = 2 * 86_400
        configure(&configuration)
        clock = configuration.clock
        server = try await VoiceMeterServer.start(configuration: configuration, migrations: try TestPostgres.migrations(),
                                                  logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
    }

    /// Runs `body`, then stops the server, whether `body` returned or threw.
    func serving<T>(_ body: () async throws -> T) async throws -> T {
        do {
            let result = try await body()
            await stop()
            return result
        } catch {
            await stop()
            throw error
        }
    }

    /// Stops the server gracefully and lets another test start one.
    func stop() async {
        await server.shutdown()
        await ServerSlots.shared.give()
    }

    var endpoint: ClientEndpoint { ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: token) }

    /// A running server whose connections may send `messagesPerSecond` messages a second after a
    /// burst of `burst`.
    static func rateLimited(messagesPerSecond: Int, burst: Int) async throws -> RunningServer {
        try await RunningServer(configure: {
            $0.allowMessages(perSecond: messagesPerSecond, burst: burst)
        })
    }

    /// Events stored, of one call or of all.
    func storedEvents(call: String? = nil) throws -> Int {
        try database.query("SELECT count(*) AS n FROM api_call_events WHERE $1::text IS NULL OR call_id = $1", [call]).single().decode("n")
    }

    /// A running server and a finance token on its database.
    static func withFinanceToken() async throws -> (running: RunningServer, financeToken: String) {
        let token = Locked<String>("")
        let running = try await RunningServer(prepare: { database in
            let secret = try TokenStore(connection: database).create(name: "finance-bi", kind: .finance)
            token.withLock { $0 = secret }
        })
        return (running, token.value)
    }

    /// Seed 002's call as messages, in the past on this server's clock and within one UTC day
    /// (`callStarts`).
    func canonicalCallMessages(_ callID: String, user: String = budgetUser) -> [String] {
        VoiceMeterServerTests.canonicalCallMessages(callID, user: user, startingAt: callStarts()[0])
    }

    /// The starts (Unix seconds) of `count` five-minute calls `spacingSeconds` apart that all lie
    /// within one UTC day (so one month) and end by now on this server's clock: the last ends now,
    /// or, when that would put them across midnight, the second before midnight.
    func callStarts(_ count: Int = 1, spacingSeconds: Int = 600) -> [Int] {
        var end = clock.now.wholeUnixSeconds
        let span = 300 + (count - 1) * spacingSeconds
        if (end - span) / 86_400 != end / 86_400 { end = end / 86_400 * 86_400 - 1 }
        return (0..<count).map { end - span + $0 * spacingSeconds }
    }
}

/// How many test servers run at once in the test process. Each holds about ten database sessions,
/// and async tests, suspended while they wait, run many more at once than the cooperative pool
/// has threads: unbounded, they ran the test PostgreSQL out of connections (max_connections 100).
actor ServerSlots {
    static let shared = ServerSlots(count: 3)
    private var free: Int
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(count: Int) { free = count }

    func take() async {
        guard free == 0 else {
            free -= 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func give() {
        if waiting.isEmpty { free += 1 } else { waiting.removeFirst().resume() }
    }
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

/// Seed 002's 5-minute call as protocol messages, from `startingAt` (Unix seconds): take it from
/// the clock of the server the messages go to (`RunningServer.canonicalCallMessages`).
func canonicalCallMessages(_ callID: String, user: String = budgetUser, startingAt start: Int) -> [String] {
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
