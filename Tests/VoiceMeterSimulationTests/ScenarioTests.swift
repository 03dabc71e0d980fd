import Logging
import PostgresClient
import Testing
import VoiceMeterDomain
import VoiceMeterSimulation
import VoiceMeterTestSupport

/// Every scenario against a real server (started in-process on loopback) and real PostgreSQL.
@Suite("voicemeter-sim scenarios end to end", .serialized)
struct ScenarioTests {
    private func run(_ scenario: Scenario, calls: Int = 3, canonical: Bool = false,
                     adjust: (inout SimulationOptions) -> Void = { _ in }) async throws -> (SimulationReport, PostgresConnection) {
        let database = try PostgresConnection(TestPostgres.migratedDatabase())
        var options = SimulationOptions()
        options.calls = calls
        options.concurrency = calls
        options.speed = 300
        options.seed = 11
        options.scenario = scenario
        options.runID = "t\(scenario.rawValue)"
        options.shape.jitter = !canonical
        adjust(&options)
        let report = try await SimulationSession.run(options: options, database: database, server: nil,
                                               logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }, progress: { _ in })
        return (report, database)
    }

    @Test("normal: the canonical call's summary is exactly $0.4045 of API cost and equals the database")
    func normalCanonical() async throws {
        let (report, database) = try await run(.normal, canonical: true)
        #expect(report.passed, "\(report.text)")
        #expect(report.result.calls.allSatisfy { $0.summary?.cost == ExactDecimal("0.4045") && $0.framesSent == 70 })
        #expect(report.verification?.mismatches == [])
        let stored = try database.query("SELECT sum(total_cost) AS cost FROM api_call_events").single()
        #expect(try stored.decode("cost", as: ExactDecimal.self) == ExactDecimal("1.2135"))
    }

    @Test("budget-cutoff: each call is cut off mid-call, hangs up, and the usage reported after the cutoff is recorded")
    func budgetCutoff() async throws {
        let (report, database) = try await run(.budgetCutoff, canonical: true)
        #expect(report.passed, "\(report.text)")
        for call in report.result.calls {
            #expect(call.outcome == .cutOff && call.cutoffScope == .call)
            #expect(call.framesSent < 70, "a cut-off call hangs up early")
            #expect(!call.seqsAfterCutoff.isEmpty)
            for seq in call.seqsAfterCutoff {
                let row = try database.query("SELECT service, total_cost FROM api_call_events WHERE call_id = $1 AND seq = $2", [call.callID, seq]).single()
                #expect(try row.decode("service", as: String.self) == "twilio")
            }
            let status = try database.query("SELECT status FROM calls WHERE call_id = $1", [call.callID]).single()
            #expect(try status.decode("status", as: String.self) == "cut_off")
        }
    }

    @Test("month-exhausted: admission refuses every call and nothing is billed")
    func monthExhausted() async throws {
        let (report, database) = try await run(.monthExhausted)
        #expect(report.passed, "\(report.text)")
        #expect(report.result.count(.rejected) == 3)
        #expect(report.result.calls.allSatisfy { $0.detail == "month_budget_exhausted" })
        #expect(try database.query("SELECT count(*) AS n FROM api_call_events").single().decode("n", as: Int.self) == 0)
    }

    @Test("reconnect: calls survive a dropped connection; resent frames are charged once")
    func reconnect() async throws {
        let (report, _) = try await run(.reconnect)
        #expect(report.passed, "\(report.text)")
        #expect(report.result.reconnects >= 3)
        #expect(report.result.count(.completed) == 3)
    }

    @Test("duplicates: frames sent twice are acknowledged and stored once")
    func duplicates() async throws {
        let (report, database) = try await run(.duplicates)
        #expect(report.passed, "\(report.text)")
        #expect(report.result.duplicatesSent > 0)
        let stored = try database.query("SELECT count(*) AS n FROM api_call_events").single().decode("n", as: Int.self)
        #expect(stored == report.result.framesSent)
    }

    @Test("bad-input: each malformed frame gets its documented error and the calls complete unharmed")
    func badInput() async throws {
        let (report, _) = try await run(.badInput)
        #expect(report.passed, "\(report.text)")
        for code in ["invalid_json", "unknown_type", "missing_field", "invalid_amount", "invalid_unit", "invalid_timestamp"] {
            #expect(report.result.errorsByCode[code] == 3, "\(code)")
        }
    }

    @Test("a replayed session plays as recorded; the JSON report carries the figures")
    func replayAndJSON() async throws {
        let script = try ReplayFile.parse("""
            {"offset":"10","service":"deepgram","operation":"stt_streaming","model":"nova-2","unit":"seconds","amount":"10"}
            {"offset":"30","service":"twilio","operation":"voice_outbound","unit":"seconds","amount":"30"}
            {"offset":"31","service":"elevenlabs","operation":"tts_generation","model":"eleven_turbo_v2_5","unit":"characters","amount":"1000"}
            """, revenue: ExactDecimal("4.99")!)
        let (report, _) = try await run(.normal, calls: 2) { $0.replay = script }
        #expect(report.passed, "\(report.text)")
        // Deepgram 10 s at $0.0059/min, Twilio's first minute $0.014, 1,000 characters at $0.15/1k.
        #expect(report.result.calls.allSatisfy { $0.summary?.cost == ExactDecimal("0.1649833333") })
        let json = report.json
        #expect(json.contains(#""outcomes":{"completed":2,"cut_off":0,"rejected":0,"failed":0}"#))
        #expect(json.contains(#""passed":true"#))
    }
}
