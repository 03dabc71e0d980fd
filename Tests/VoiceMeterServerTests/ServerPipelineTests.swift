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

@Suite("The metering server end to end", .serialized)
struct ServerPipelineTests {
    @Test("the canonical call streams in, is acknowledged after commit and summarized exactly")
    func canonicalCall() async throws {
        let running = try await RunningServer()
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            client.send(running.canonicalCallMessages("CA0001"))

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
    }

    @Test("with several metering shards, the calls of users on every shard are acknowledged and summarized exactly")
    func severalShards() async throws {
        let running = try await RunningServer(configure: { $0.meteringShards = 3 })
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let calls = (1...6).map { (call: "SH\($0)", user: "shard-user-\($0)") }
            let scripts = calls.map { running.canonicalCallMessages($0.call, user: $0.user) }
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
    }

    @Test("period rollups are journaled with the events, folded while running, all folded after a stop, exact throughout")
    func rollupFolding() async throws {
        func periodCosts(_ database: PostgresConnection, from table: String) throws -> [String] {
            try database.query("SELECT summary_type || ' ' || total_cost::numeric(20, 4) AS row FROM \(table) WHERE summary_type <> 'call' ORDER BY 1")
                .map { try $0.decode("row") }
        }
        let expected = ["platform_day 0.4045", "user_day 0.4045", "user_month 0.4045"]
        // Folding every second: the rows appear without a shutdown.
        let folding = try await RunningServer(configure: { $0.rollupFoldSeconds = 1 })
        try await folding.serving {
            let first = try StreamingClient(folding.endpoint)
            first.send(folding.canonicalCallMessages("CAFOLD1"))
            #expect(first.waitForSummary())
            #expect(try periodCosts(folding.database, from: "period_rollups") == expected)
            let deadline = Date().addingTimeInterval(5)
            while try periodCosts(folding.database, from: "cost_summaries") != expected, Date() < deadline { usleep(100_000) }
            #expect(try periodCosts(folding.database, from: "cost_summaries") == expected)
        }

        // Stopping at once, whatever the sweep reached: after the stop everything is folded.
        let stopping = try await RunningServer(configure: { $0.rollupFoldSeconds = 3_600 })
        try await stopping.serving {
            let second = try StreamingClient(stopping.endpoint)
            second.send(stopping.canonicalCallMessages("CAFOLD2"))
            #expect(second.waitForSummary())
            #expect(try periodCosts(stopping.database, from: "period_rollups") == expected)
        }
        #expect(try periodCosts(stopping.database, from: "cost_summaries") == expected)
        #expect(try stopping.database.query("SELECT 1 FROM rollup_journal").isEmpty)
    }

    @Test("a resent frame is acknowledged again and stored once; different content for a seq is seq_conflict")
    func resendAndConflict() async throws {
        let running = try await RunningServer()
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let messages = running.canonicalCallMessages("CA0002")
            client.send(messages[0...1])
            #expect(client.wait { $0.contains(#"{"type":"ack","call_id":"CA0002","seq":1}"#) })
            client.send([messages[1], messages[1].replacingOccurrences(of: #""amount":"30""#, with: #""amount":"31""#)])
            #expect(client.wait { $0.filter { $0 == #"{"type":"ack","call_id":"CA0002","seq":1}"# }.count == 2 })
            #expect(client.wait { $0.contains { $0.contains(#""code":"seq_conflict""#) } })
            #expect(try running.storedEvents() == 1)
        }
    }

    @Test("rate_limited names the call and seq; no ack passes a refused frame; call.end waits for its resend; the summary has every frame")
    func rateLimitedFramesAreNeverAcknowledgedUnstored() async throws {
        let running = try await RunningServer.rateLimited(messagesPerSecond: 200, burst: 30)
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let messages = running.canonicalCallMessages("CARATE")
            func refusals() -> [String] { client.messages.filter { $0.contains(#""code":"rate_limited""#) } }
            // The burst allowance takes call.start and about 29 frames; the rest are refused, each by name.
            client.send(messages.dropLast())
            #expect(client.wait { _ in refusals().count >= 30 && client.highestAck(call: "CARATE") > 0 })
            let refused = refusals().map { refusal in
                Int(refusal.components(separatedBy: #""seq":"#).last!.prefix { $0.isNumber }) ?? 0
            }
            #expect(refusals().allSatisfy { $0.contains(#""call_id":"CARATE""#) }, "\(refusals())")
            let lowestRefused = try #require(refused.min())
            // Every frame below the lowest refused one is stored and acknowledged; no ack passes it.
            #expect(client.wait { _ in client.highestAck(call: "CARATE") == lowestRefused - 1 })
            // call.end arrives before the refused frames come back: the call waits for them.
            client.send([messages.last!])
            let beforeResends = client.messages.count
            for seq in refused.sorted() {
                client.send([messages[seq]])
                #expect(client.wait { _ in client.highestAck(call: "CARATE") >= seq || client.messages.contains { $0.contains(#""type":"call.summary""#) } })
            }
            #expect(client.waitForSummary())
            #expect(client.messages.prefix(beforeResends).allSatisfy { ackedSeq($0).map { $0 < lowestRefused } ?? true })
            #expect(refusals().count == refused.count, "call.end or a resend was rate limited: \(refusals().suffix(3))")
            #expect(client.messages.last?.hasPrefix(#"{"type":"call.summary","call_id":"CARATE","cost":"0.4045""#) == true, "\(client.messages.suffix(3))")
            #expect(try running.storedEvents(call: "CARATE") == 70)
        }
    }

    @Test("a frame refused as rate_limited, then for good (invalid_amount) when resent, is no longer waited for: the ended call is summarized")
    func permanentRefusalAfterRateLimit() async throws {
        let running = try await RunningServer.rateLimited(messagesPerSecond: 100, burst: 2)
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let messages = running.canonicalCallMessages("CAPERM")
            // Seq 2 as 10^11 GPT-4 Turbo output tokens: $3,000,000, above what one frame may cost.
            let costly = messages[2].replacingOccurrences(
                of: #""service":"twilio","operation":"voice_outbound","amount":"30","unit":"seconds""#,
                with: #""service":"openai","operation":"chat_completion","amount":"100000000000","unit":"output_tokens","model":"gpt-4-turbo""#)
            client.send([messages[0], messages[1], costly])
            #expect(client.wait { $0.contains { $0.contains(#""code":"rate_limited""#) && $0.contains(#""seq":2"#) } })
            #expect(client.wait { _ in client.highestAck(call: "CAPERM") == 1 })
            client.send([messages.last!, costly])
            #expect(client.wait { $0.contains { $0.contains(#""code":"invalid_amount""#) && $0.contains(#""seq":2"#) } })
            #expect(client.waitForSummary())
            #expect(client.messages.filter { $0.contains(#""code":"rate_limited""#) }.count == 1, "call.end or the resend was rate limited")
            #expect(try running.storedEvents(call: "CAPERM") == 1)
        }
    }

    @Test("usage for a call that was never started is unknown_call")
    func unknownCall() async throws {
        let running = try await RunningServer()
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            client.send([running.canonicalCallMessages("CA0003")[1]])
            #expect(client.wait { $0.contains { $0.contains(#""code":"unknown_call""#) && $0.contains(#""seq":1"#) } })
            // Kept for audit, not billed.
            #expect(client.wait { _ in
                (try? running.database.query("SELECT count(*) AS n FROM rejected_frames WHERE call_id = 'CA0003' AND seq = 1").single().decode("n", as: Int.self)) == 1
            })
            #expect(try running.storedEvents() == 0)
        }
    }

    @Test("a created token authenticates; once revoked it is refused with 401 within seconds")
    func tokenRevocation() async throws {
        let running = try await RunningServer()
        try await running.serving {
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
    }

    @Test("a revoked token's open connection is closed with 1008 within a second; frames sent after are not stored; other tokens' connections stay")
    func revocationClosesOpenConnections() async throws {
        let running = try await RunningServer(configure: { $0.tokenRefreshIntervalMilliseconds = 60_000 })  // the NOTIFY alone must do it
        try await running.serving {
            let otherToken = try TokenStore(connection: running.database).create(name: "other-pipeline", kind: .ingest)
            let client = try StreamingClient(running.endpoint)
            let other = try StreamingClient(ClientEndpoint(host: "127.0.0.1", port: running.server.port, bearerToken: otherToken))
            let messages = running.canonicalCallMessages("CAREVOKE")
            client.send(messages[0...10])
            #expect(client.wait { _ in client.highestAck(call: "CAREVOKE") == 10 })

            try TokenStore(connection: running.database).revoke(name: "pipeline")
            #expect(client.recorder.wait(seconds: 1) { client.events.contains(.closeReceived(code: 1008)) })
            client.send(messages[11...20])
            let otherMessages = running.canonicalCallMessages("CAKEPT", user: "kept-user")
            other.send(otherMessages[0...5])
            #expect(other.wait { _ in other.highestAck(call: "CAKEPT") == 5 })
            #expect(try running.storedEvents(call: "CAREVOKE") == 10)
        }
    }

    @Test("200 frames for an unknown call each get unknown_call, but cost at most ten audit rows a second")
    func junkFramesDoNotCostAnInsertApiece() async throws {
        let running = try await RunningServer()
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let frame = running.canonicalCallMessages("CAJUNK")[1]
            client.send((1...200).map { frame.replacingOccurrences(of: #""seq":1,"#, with: #""seq":\#($0),"#) })
            let started = ContinuousClock.now
            #expect(client.wait { $0.filter { $0.contains(#""code":"unknown_call""#) }.count == 200 })
            let seconds = Int((ContinuousClock.now - started) / .seconds(1)) + 2
            // The rows are written on the registry's queue, in order: once a later call.start is
            // answered, every row the junk caused is there.
            client.send([running.canonicalCallMessages("CAAFTER")[0]])
            #expect(client.wait { $0.contains { $0.contains("call.accepted") } })
            let recorded = try running.database.query("SELECT count(*) AS n FROM rejected_frames WHERE call_id = 'CAJUNK'").single().decode("n", as: Int.self)
            #expect(recorded >= 10 && recorded <= 10 * seconds, "\(recorded) rows in at most \(seconds) s")
        }
    }

    @Test("a token scoped to a tenant opens calls for its users only; another user's call.start is refused and registers nothing")
    func scopedTokenStaysInItsTenant() async throws {
        let running = try await RunningServer()
        try await running.serving {
            let tenantToken = try TokenStore(connection: running.database).create(name: "tenant-a", kind: .ingest, userScope: "tenant-a/")
            let client = try StreamingClient(ClientEndpoint(host: "127.0.0.1", port: running.server.port, bearerToken: tenantToken))
            client.send([running.canonicalCallMessages("CAOTHER", user: "tenant-b/u1")[0], running.canonicalCallMessages("CAMINE", user: "tenant-a/u1")[0]])
            #expect(client.wait { $0.contains { $0.contains(#""call_id":"CAMINE""#) && $0.contains("call.accepted") } })
            #expect(client.messages.first == #"{"type":"call.rejected","call_id":"CAOTHER","reason":"user_not_in_token_scope"}"#)
            #expect(try running.database.query("SELECT count(*) AS n FROM calls WHERE call_id = 'CAOTHER'").single().decode("n", as: Int.self) == 0)
            #expect(throws: TokenError.self) { try TokenStore(connection: running.database).create(name: "finance-scoped", kind: .finance, userScope: "x") }
        }
    }

    @Test("a connection that knows a live call_id but did not start it can neither store usage, take its acks, nor end it")
    func onlyTheStartingConnectionSpeaksForACall() async throws {
        let running = try await RunningServer()
        try await running.serving {
            let pipeline = try StreamingClient(running.endpoint)
            let intruder = try StreamingClient(running.endpoint)
            let messages = running.canonicalCallMessages("CAOWNED")
            pipeline.send(messages[0...10])
            #expect(pipeline.wait { _ in pipeline.highestAck(call: "CAOWNED") == 10 })
            // Seq 11 with other content, and call.end, from the other connection.
            intruder.send([messages[11].replacingOccurrences(of: #""seq":11"#, with: #""seq":11,"external_id":"x""#),
                           #"{"type":"call.end","call_id":"CAOWNED"}"#])
            #expect(intruder.wait { $0.filter { $0.contains(#""code":"unknown_call""#) }.count == 2 })
            pipeline.send(messages[11...])
            #expect(pipeline.waitForSummary())
            #expect(!pipeline.messages.contains { $0.contains("seq_conflict") })
            #expect(!intruder.messages.contains { $0.contains(#""type":"ack""#) || $0.contains("call.summary") })
            try expectCanonicalLedger(running.database, call: "CAOWNED")
        }
    }

    @Test("a refused upgrade is an HTTP/1.1 answer with its length and Connection: close; Python's websockets reads 401 and 403 with the body")
    func refusalsReadableByWebsockets() async throws {
        let (running, financeToken) = try await RunningServer.withFinanceToken()
        try await running.serving {
            for (token, status) in [(nil, "401 Unauthorized"), ("vmi_not-a-token", "401 Unauthorized"), (financeToken, "403 Forbidden")] {
                let socket = try RawSocket(port: running.server.port)
                socket.sendUpgrade(token: token)
                let (response, closed) = socket.readUntilClosed()
                let head = response.components(separatedBy: "\r\n\r\n")[0].components(separatedBy: "\r\n")
                let body = response.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
                #expect(head.first == "HTTP/1.1 \(status)", "\(response)")
                #expect(head.contains("Content-Length: \(body.utf8.count)"), "\(response)")
                #expect(head.contains("Connection: close"), "\(response)")
                #expect(closed)
            }

            // An upgrade libwebsockets itself cannot take (no key, an unknown version).
            let malformed = try RawSocket(port: running.server.port)
            malformed.send("GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 7\r\nAuthorization: Bearer \(running.token)\r\n\r\n")
            let (answer, _) = malformed.readUntilClosed()
            #expect(answer.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(answer)")
            #expect(answer.contains("Sec-WebSocket-Version: 13"), "\(answer)")

            let python = try TestPython.interpreter(with: ["websockets>=13"])
            let url = "ws://127.0.0.1:\(running.server.port)/v1/stream"
            for (token, status, error) in [("vmi_revoked-or-wrong", 401, "unauthorized"), (financeToken, 403, "refused")] {
                let run = try ProcessRunner.run(python, [TestPython.script("websockets_refusal.py"), url, token])
                let seen = try JSONParser.parse(run.output.trimmingCharacters(in: .whitespacesAndNewlines))
                #expect(seen["exception"] == .string("InvalidStatus"), "\(run.output)")
                #expect(seen["status"] == .number("\(status)"), "\(run.output)")
                guard case .string(let body)? = seen["body"] else { Issue.record("no body: \(run.output)"); continue }
                #expect(try JSONParser.parse(body)["error"] == .string(error), "\(body)")
            }
        }
    }

    @Test("a caller cancelled while the server starts gets CancellationError, and start returns only once that server has stopped")
    func cancelledStart() async throws {
        var configuration = ServerConfiguration(database: try TestPostgres.migratedDatabase())
        configuration.listener.port = 0
        let outcome = await Task { () async throws -> VoiceMeterServer in
            withUnsafeCurrentTask { $0?.cancel() }
            return try await VoiceMeterServer.start(configuration: configuration, migrations: try TestPostgres.migrations(),
                                                    logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        }.result
        #expect(throws: CancellationError.self) { try outcome.get() }
    }

    @Test("/healthz and /readyz answer on the listener")
    func health() async throws {
        let running = try await RunningServer()
        try await running.serving {
            for (path, expected) in [("/healthz", #"{"status":"ok"}"#), ("/readyz", #"{"status":"ready","reason":"ok"}"#)] {
                let socket = try RawSocket(port: running.server.port)
                socket.send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                let (response, _) = socket.readUntilClosed()
                #expect(response.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(path): \(response)")
                #expect(response.lowercased().contains("content-length: \(expected.utf8.count + 1)\r\n"), "\(path): \(response)")
                #expect(response.contains(expected))
            }
        }
    }
}
