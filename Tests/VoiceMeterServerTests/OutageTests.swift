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
    messages.compactMap { ackedSeq($0, call: call) }.max() ?? 0
}

/// The seq of an ack message (of `call`, when given).
func ackedSeq(_ message: String, call: String? = nil) -> Int? {
    guard message.hasPrefix(call.map { #"{"type":"ack","call_id":"\#($0)","seq":"# } ?? #"{"type":"ack""#) else { return nil }
    return Int(message.split(separator: ":").last!.dropLast())
}

/// Checks the invariants after an incident: every seq once, the ledger and the call's rollup at
/// exactly the canonical call's cost.
func expectCanonicalLedger(_ database: PostgresConnection, call: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let ledger = try database.query("""
        SELECT count(*) AS n, count(DISTINCT seq) AS d, sum(total_cost) AS cost FROM api_call_events WHERE call_id = $1
        """, [call]).single()
    #expect(try ledger.decode("n", as: Int.self) == 70, sourceLocation: sourceLocation)
    #expect(try ledger.decode("d", as: Int.self) == 70, sourceLocation: sourceLocation)
    #expect(try ledger.decode("cost", as: ExactDecimal.self) == ExactDecimal("0.4045")!, sourceLocation: sourceLocation)
    let summary = try database.query("""
        SELECT total_cost AS cost, event_count AS n FROM cost_summaries WHERE summary_type = 'call' AND call_id = $1
        """, [call]).single()
    #expect(try summary.decode("cost", as: ExactDecimal.self) == ExactDecimal("0.4045")!, sourceLocation: sourceLocation)
    #expect(try summary.decode("n", as: Int.self) == 70, sourceLocation: sourceLocation)
}

@Suite("Outages: nothing acknowledged is lost, nothing is counted twice", .serialized)
struct OutageTests {
    @Test("PostgreSQL crashes and restarts mid-stream: the server recovers by itself and the ledger reconciles")
    func databaseCrashMidStream() async throws {
        let cluster = try TestPostgres.privateCluster()
        defer { try? cluster.destroy() }
        let running = try await RunningServer(options: try cluster.start())
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let messages = running.canonicalCallMessages("CAOUT")
            client.send(messages[0...30])
            #expect(client.wait { _ in client.highestAck(call: "CAOUT") == 30 })

            try cluster.stop(immediately: true)
            client.send(messages[31...60])
            usleep(1_500_000)
            let ackedDuringOutage = client.highestAck(call: "CAOUT")
            _ = try cluster.start()
            client.send(messages[61...])

            #expect(ackedDuringOutage == 30)
            #expect(client.waitForSummary())
            #expect(client.messages.last?.contains(#""cost":"0.4045""#) == true)
            try expectCanonicalLedger(PostgresConnection(running.options), call: "CAOUT")
        }
    }

    @Test("the server is killed with SIGKILL mid-call; the client resends what was not acknowledged to a new server")
    func serverKilledMidStream() throws {
        let options = try TestPostgres.migratedDatabase()
        let database = try PostgresConnection(options)
        let token = try TokenStore(connection: database).create(name: "pipeline", kind: .ingest)
        let messages = canonicalCallMessages("CAKILL", startingAt: Timestamp.now.wholeUnixSeconds - 300)

        let first = try ServerProcess(database: options)
        let client = try StreamingClient(ClientEndpoint(host: "127.0.0.1", port: first.port, bearerToken: token))
        client.send(messages[0...40])
        #expect(client.wait { _ in client.highestAck(call: "CAKILL") == 40 })
        client.send(messages[41...55])
        first.kill()
        #expect(client.recorder.wait { client.events.contains(.disconnected) })
        let acked = client.highestAck(call: "CAKILL")

        // What a careful pipeline does: resume the call elsewhere and resend everything unacknowledged.
        let second = try ServerProcess(database: options)
        defer { second.kill() }
        client.reconnect(to: ClientEndpoint(host: "127.0.0.1", port: second.port, bearerToken: token))
        client.send([messages[0]] + messages[(acked + 1)...])
        #expect(client.waitForSummary())
        #expect(client.messages.last?.contains(#""cost":"0.4045""#) == true, "\(client.messages.last ?? "")")
        try expectCanonicalLedger(database, call: "CAKILL")
    }
}

/// `voicemeter serve` as a child process on a free port, for tests that kill it.
final class ServerProcess {
    let pid: pid_t
    let port: Int
    private let logPath: String

    init(database: PostgresConnectionOptions, extraArguments: [String] = []) throws {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("voicemeter").path
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw ServerProcessError.notBuilt(binary) }
        logPath = FileManager.default.temporaryDirectory.appendingPathComponent("voicemeter-serve-\(UUID().uuidString.prefix(8)).log").path
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let arguments = [binary, "serve", "--listen", "127.0.0.1:0", "--database-url", database.conninfo, "--flush-ms", "20"] + extraArguments
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
    func flowControlDuringOutage() async throws {
        let cluster = try TestPostgres.privateCluster()
        defer { try? cluster.destroy() }
        let running = try await RunningServer(options: try cluster.start(), configure: { $0.writerQueueEventsMax = 40 })
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let messages = running.canonicalCallMessages("CAFLOW")
            client.send([messages[0]])
            #expect(client.wait { $0.first?.contains("call.accepted") == true })

            try cluster.stop(immediately: true)
            client.send(messages[1...])
            usleep(1_000_000)
            _ = try cluster.start()

            #expect(client.waitForSummary())
            #expect(!client.messages.contains { $0.contains(#""code":"overloaded""#) })
            #expect(client.messages.last?.contains(#""cost":"0.4045""#) == true)
            try expectCanonicalLedger(PostgresConnection(running.options), call: "CAFLOW")
        }
    }
}

extension BackpressureTests {
    @Test("a frame answered overloaded is never covered by an ack, even after a later frame commits; sent again, it is stored")
    func overloadedFramesAreNotAcknowledged() async throws {
        let cluster = try TestPostgres.privateCluster()
        defer { try? cluster.destroy() }
        let running = try await RunningServer(options: try cluster.start(), configure: {
            $0.writerQueueEventsMax = 4
            $0.writerConnections = 1
        })
        try await running.serving {
            // Twelve calls, each on its connection: flow control pauses each connection only after
            // its own frame, so while PostgreSQL is away the writer's queue fills and refuses the rest.
            let recorder = ClientRecorder()
            let client = try WebSocketClient { recorder.record($0, $1) }
            defer { client.shutdown() }
            let calls = (0..<12).map { index in
                (link: client.connect(to: running.endpoint), messages: running.canonicalCallMessages("CAOVER\(index)", user: "over-user-\(index)"))
            }
            for call in calls { client.send(call.messages[0], on: call.link) }
            #expect(recorder.wait { calls.allSatisfy { call in recorder.messages(of: call.link).contains { $0.contains("call.accepted") } } })
            func overloaded() -> [Int] {
                calls.indices.filter { recorder.messages(of: calls[$0].link).contains { $0.contains(#""code":"overloaded""#) } }
            }

            try cluster.stop(immediately: true)
            for call in calls { client.send(call.messages[1], on: call.link) }
            #expect(recorder.wait { !overloaded().isEmpty })
            // Later frames may still be on their way to a refusal: settle once nothing new came for 0.5 s.
            var refused = overloaded()
            for _ in 0..<40 {
                usleep(500_000)
                let latest = overloaded()
                if latest == refused { break }
                refused = latest
            }
            let refusedCall = try #require(refused.first)

            _ = try cluster.start()
            let database = try PostgresConnection(running.options)
            func stored() -> Int { (try? database.query("SELECT count(*) AS n FROM api_call_events").single().decode("n", as: Int.self)) ?? -1 }
            #expect(recorder.wait(seconds: 20) { stored() == 12 - refused.count })
            // A later frame of a refused call commits while its seq 1 is still missing: no ack covers seq 1.
            let call = calls[refusedCall]
            client.send(call.messages[2], on: call.link)
            #expect(recorder.wait(seconds: 20) { stored() == 13 - refused.count })
            usleep(300_000)
            #expect(highestAck(recorder.messages(of: call.link), call: "CAOVER\(refusedCall)") == 0)

            client.send(call.messages[1], on: call.link)
            #expect(recorder.wait(seconds: 20) { highestAck(recorder.messages(of: call.link), call: "CAOVER\(refusedCall)") == 2 })
            #expect(stored() == 14 - refused.count)
        }
    }
}

@Suite("Graceful shutdown", .serialized)
struct GracefulShutdownTests {
    @Test("SIGTERM mid-stream: everything taken is committed and acknowledged, connections close with 1001, exit 0")
    func sigtermDrains() throws {
        let options = try TestPostgres.migratedDatabase()
        let database = try PostgresConnection(options)
        let token = try TokenStore(connection: database).create(name: "pipeline", kind: .ingest)
        let server = try ServerProcess(database: options)
        let client = try StreamingClient(ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: token))
        let messages = canonicalCallMessages("CATERM", startingAt: Timestamp.now.wholeUnixSeconds - 300)
        client.send([messages[0]])
        #expect(client.wait { $0.first?.contains("call.accepted") == true })
        client.send(messages[1...60])
        usleep(20_000)
        let started = Date()
        #expect(server.terminate() == 0)
        #expect(Date().timeIntervalSince(started) < 15)
        #expect(client.recorder.wait { client.events.contains(.closeReceived(code: 1001)) })
        let acked = client.highestAck(call: "CATERM")
        let stored = try database.query("SELECT count(*) AS n, coalesce(max(seq), 0) AS top FROM api_call_events").single()
        #expect(acked > 0)
        #expect(try stored.decode("n", as: Int.self) == acked)
        #expect(try stored.decode("top", as: Int.self) == acked)
    }

    @Test("SIGTERM while the database hangs: the server exits within its drain bound, acknowledges nothing it did not commit, and the resent frames are stored once")
    func sigtermWhileDatabaseHangs() throws {
        let options = try TestPostgres.migratedDatabase()
        let database = try PostgresConnection(options)
        let token = try TokenStore(connection: database).create(name: "pipeline", kind: .ingest)
        // Statements may wait a minute (locks 20 s) before the database gives up on them.
        let server = try ServerProcess(database: options, extraArguments: ["--shutdown-drain-seconds", "2", "--database-statement-timeout-seconds", "60"])
        let client = try StreamingClient(ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: token))
        let messages = canonicalCallMessages("CAHANG", startingAt: Timestamp.now.wholeUnixSeconds - 300)
        client.send(messages[0...20])
        #expect(client.wait { _ in client.highestAck(call: "CAHANG") == 20 })

        // Every write and the rollup fold now wait on locks another session holds.
        let locker = try PostgresConnection(options)
        _ = try locker.query("BEGIN")
        _ = try locker.query("LOCK TABLE api_call_events, rollup_journal, cost_summaries IN ACCESS EXCLUSIVE MODE")
        client.send(messages[21...40])
        usleep(300_000)
        let started = ContinuousClock.now
        #expect(server.terminate() == 0)
        // The bound: the writers' drain (2 s), 2 s to write acks and close, 3 s for the final fold.
        #expect(ContinuousClock.now - started < .seconds(9), "SIGTERM took \(ContinuousClock.now - started)")
        #expect(client.highestAck(call: "CAHANG") == 20)
        _ = try locker.query("ROLLBACK")

        // The pipeline resends what was not acknowledged to another server.
        let second = try ServerProcess(database: options)
        defer { second.kill() }
        client.reconnect(to: ClientEndpoint(host: "127.0.0.1", port: second.port, bearerToken: token))
        client.send([messages[0]] + messages[21...])
        #expect(client.waitForSummary())
        try expectCanonicalLedger(database, call: "CAHANG")
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

@Suite("A frame the database refuses", .serialized)
struct PoisonFrameTests {
    @Test("is answered with an error alone; the rest of its batch and its call are committed and acknowledged")
    func refusedFrameIsIsolated() async throws {
        // A constraint only this test has makes the database refuse seq 13 (a data error, not an outage).
        let running = try await RunningServer(prepare: { try $0.runScript("ALTER TABLE api_call_events ADD CONSTRAINT refuse_13 CHECK (seq <> 13)") })
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            client.send(running.canonicalCallMessages("CAPOISON"))
            #expect(client.waitForSummary())
            #expect(client.messages.contains { $0.contains(#""code":"internal""#) && $0.contains(#""seq":13"#) })
            #expect(client.messages.contains(#"{"type":"ack","call_id":"CAPOISON","seq":70}"#))
            let stored = try running.database.query("SELECT count(*) AS n FROM api_call_events").single().decode("n", as: Int.self)
            #expect(stored == 69)
        }
    }

    @Test("is never one blamed for a call ending the database refuses: every frame is stored and acknowledged")
    func refusedEndingBlamesNoFrame() async throws {
        // A constraint only this test has makes the database refuse the call's ending (a data error in the ending).
        let running = try await RunningServer(prepare: { try $0.runScript("ALTER TABLE calls ADD CONSTRAINT refuse_completed CHECK (status <> 'completed')") })
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let messages = running.canonicalCallMessages("CAENDING")
            // The end goes with the last frames, into one batch with them.
            client.send(messages)
            #expect(client.wait { $0.contains(#"{"type":"ack","call_id":"CAENDING","seq":70}"#) })
            #expect(!client.messages.contains { $0.contains(#""type":"error""#) })
            #expect(try running.storedEvents(call: "CAENDING") == 70)
            let ended = try running.database.query("SELECT ended_at IS NOT NULL AS ended FROM calls WHERE call_id = 'CAENDING'").single()
            #expect(try ended.decode("ended", as: Bool.self) == false, "the refused ending leaves the call open")
        }
    }
}

@Suite("A database that refuses writes", .serialized)
struct ReadOnlyDatabaseTests {
    /// `/readyz`'s whole response.
    func readiness(_ running: RunningServer) -> String {
        guard let socket = try? RawSocket(port: running.server.port) else { return "" }
        socket.send("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return socket.readUntilClosed().0
    }

    @Test("/readyz with the database down says database_unreachable, and nothing of the database's message (hosts, users)")
    func readinessLeaksNothing() async throws {
        let cluster = try TestPostgres.privateCluster()
        defer { try? cluster.destroy() }
        let running = try await RunningServer(options: try cluster.start(), configure: { $0.readinessCheckIntervalMilliseconds = 100 })
        try await running.serving {
            #expect(readiness(running).hasPrefix("HTTP/1.1 200"))
            try cluster.stop(immediately: true)
            var answer = ""
            #expect(ClientRecorder().wait(seconds: 10) {
                answer = readiness(running)
                return answer.hasPrefix("HTTP/1.1 503")
            })
            #expect(answer.hasSuffix(#"{"status":"not_ready","reason":"database_unreachable"}"# + "\n"), "\(answer)")
        }
    }

    @Test("is an outage, not bad data: no frame is refused, and every frame is stored once writes are accepted again")
    func readOnlyIsAnOutage() async throws {
        // What a server sees while its primary is demoted: every insert fails with 25006. A
        // sequence counts the refused attempts (it is not rolled back with them).
        let running = try await RunningServer(prepare: { database in
            try database.runScript("""
                CREATE SEQUENCE refused_writes;
                CREATE TABLE read_only_switch (on_now boolean NOT NULL);
                INSERT INTO read_only_switch VALUES (true);
                CREATE FUNCTION refuse_while_read_only() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF (SELECT on_now FROM read_only_switch) THEN
                        PERFORM nextval('refused_writes');
                        RAISE EXCEPTION 'cannot execute INSERT in a read-only transaction' USING ERRCODE = '25006';
                    END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER read_only BEFORE INSERT ON api_call_events FOR EACH ROW EXECUTE FUNCTION refuse_while_read_only();
                """)
        })
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            client.send(running.canonicalCallMessages("CAREADONLY"))
            func refusedWrites() -> Int {
                (try? running.database.query("SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM refused_writes")
                    .single().decode("n", as: Int.self)) ?? 0
            }
            // Read-only for ten refused attempts: more than halving the call's batch down to one frame
            // takes (what a writer that took the refusal for bad data did, refusing frame after frame).
            let deadline = ContinuousClock.now + .seconds(30)
            while refusedWrites() < 10 && ContinuousClock.now < deadline { usleep(20_000) }
            #expect(refusedWrites() >= 10)
            let notReady = readiness(running)
            #expect(notReady.hasPrefix("HTTP/1.1 503"), "\(notReady)")
            #expect(notReady.hasSuffix(#"{"status":"not_ready","reason":"ledger_cannot_commit"}"# + "\n"), "\(notReady)")
            try running.database.query("UPDATE read_only_switch SET on_now = false")

            #expect(client.waitForSummary())
            #expect(readiness(running).hasPrefix("HTTP/1.1 200"))
            #expect(!client.messages.contains { $0.contains(#""type":"error""#) })
            #expect(client.messages.contains(#"{"type":"ack","call_id":"CAREADONLY","seq":70}"#))
            #expect(try running.storedEvents(call: "CAREADONLY") == 70)
        }
    }
}
