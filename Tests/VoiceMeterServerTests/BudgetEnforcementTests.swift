import Foundation
import PostgresClient
import Testing
import VoiceMeterDomain
import VoiceMeterServer
import VoiceMeterStore
import VoiceMeterTestSupport
import WebSocketTransport

let budgetUser = "7b0f3a0e-5a7e-4a53-9a40-6a3f7d1b2c10"

func setBudget(_ settings: BudgetSettings) -> (PostgresConnection) throws -> Void {
    { try BudgetStore(connection: $0).update(budgetUser, with: settings) }
}

@Suite("Budgets enforced live", .serialized)
struct BudgetEnforcementTests {
    @Test("a per-call limit warns at 75% and 90%, cuts off within one frame of the limit, and later usage is still recorded")
    func perCallCutoff() async throws {
        let running = try await RunningServer(prepare: setBudget(BudgetSettings(callLimit: ExactDecimal("0.30"))))
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            client.send(running.canonicalCallMessages("CACUT"))
            #expect(client.waitForSummary())
            let messages = client.messages
            #expect(messages.first == #"{"type":"call.accepted","call_id":"CACUT","call_limit":"0.3","month_spent":"0","month_limit":"100"}"#)
            let warnings = messages.filter { $0.contains(#""type":"budget.warning""#) }
            #expect(warnings.count == 2)
            #expect(warnings.first?.contains(#""scope":"call""#) == true)
            let cutoffs = messages.filter { $0.contains(#""type":"budget.cutoff""#) }
            #expect(cutoffs.count == 1)
            // The cutoff reports what was spent when the limit was crossed: at most one frame (≤ $0.015) over.
            let spent = cutoffs.first.flatMap { $0.split(separator: "\"").drop { $0 != "spent" }.dropFirst(2).first }.flatMap { ExactDecimal($0) }
            #expect(spent.map { $0 >= ExactDecimal("0.30")! && $0 <= ExactDecimal("0.315")! } == true, "\(cutoffs)")
            #expect(messages.last?.contains(#""cost":"0.4045""#) == true)
            // The call row is marked asynchronously (metering never waits for the database).
            #expect(client.wait { _ in
                let row = try? running.database.query("SELECT status, cutoff_reason FROM calls WHERE call_id = 'CACUT'").single()
                return (try? row?.decodeIfPresent("status", as: String.self)) == "cut_off"
                    && (try? row?.decodeIfPresent("cutoff_reason", as: String.self)) == "call_limit"
            })
            #expect(client.wait { _ in
                (try? running.database.query("SELECT count(*) AS n FROM cost_alerts WHERE call_id = 'CACUT'").single().decode("n", as: Int.self)) == 3
            })
        }
    }

    @Test("admission refuses a user whose month budget cannot cover a call")
    func admissionRefused() async throws {
        let running = try await RunningServer(prepare: setBudget(BudgetSettings(monthLimit: ExactDecimal("0.50"))))
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            client.send(running.canonicalCallMessages("CANO").prefix(3))
            #expect(client.wait { $0.contains { $0.contains("call.rejected") } })
            #expect(client.messages.first == #"{"type":"call.rejected","call_id":"CANO","reason":"month_budget_exhausted","spent":"0","limit":"0.5"}"#)
            #expect(client.wait { _ in
                (try? running.database.query("SELECT status FROM calls WHERE call_id = 'CANO'").single().decode("status", as: String.self)) == "rejected"
            })
            #expect(try running.storedEvents() == 0)
        }
    }

    @Test("a day limit cuts off all of a user's calls at once")
    func dayLimitCutsEveryCall() async throws {
        let running = try await RunningServer(prepare: setBudget(BudgetSettings(dayLimit: ExactDecimal("3.00"))))
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let start = running.callStarts()[0]
            let first = canonicalCallMessages("CADAY1", startingAt: start)
            let second = canonicalCallMessages("CADAY2", startingAt: start)
            client.send([first[0], second[0]])
            #expect(client.wait { $0.filter { $0.contains("call.accepted") }.count == 2 })
            // Expensive GPT-4 Turbo usage on the first call crosses the day limit.
            client.send([#"{"type":"usage","call_id":"CADAY1","seq":1,"ts":\#(start + 30),"service":"openai","operation":"chat_completion","model":"gpt-4-turbo","amount":"110000","unit":"output_tokens"}"#])
            #expect(client.wait { messages in
                ["CADAY1", "CADAY2"].allSatisfy { call in messages.contains { $0.contains(#""type":"budget.cutoff","call_id":"\#(call)","scope":"day""#) } }
            })
        }
    }

    @Test("the tick sees spend committed by other processes and cuts off on the month limit")
    func tickRefreshesCommittedSpend() async throws {
        let running = try await RunningServer(prepare: setBudget(BudgetSettings(monthLimit: ExactDecimal("5.00"))), configure: { $0.budgetTickSeconds = 1 })
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            client.send(running.canonicalCallMessages("CATICK").prefix(5))
            #expect(client.wait { $0.contains(#"{"type":"ack","call_id":"CATICK","seq":4}"#) })
            // Another server node commits the rest of this user's month limit, in the month of this
            // server's clock (this call's own frames may lie in the month before, at its first seconds).
            let month = running.clock.now.startOfMonth
            try running.database.query("""
                INSERT INTO cost_summaries (summary_type, user_id, period_start, period_end, total_cost)
                VALUES ('user_month', $1, $2, $2::timestamptz + interval '1 month', 5.00)
                ON CONFLICT (summary_type, user_id, call_id, period_start) DO UPDATE SET total_cost = cost_summaries.total_cost + 5.00
                """, [budgetUser, month])
            #expect(client.wait(seconds: 5) { $0.contains { $0.contains(#""type":"budget.cutoff","call_id":"CATICK","scope":"month""#) } })
        }
    }
}

@Suite("Budget changes and several servers", .serialized)
struct BudgetPropagationTests {
    @Test("a budget change reaches a running call within a second")
    func settingsChangeArrivesQuickly() async throws {
        let running = try await RunningServer()
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            client.send(running.canonicalCallMessages("CALIVE").prefix(12))
            #expect(client.wait { $0.contains(#"{"type":"ack","call_id":"CALIVE","seq":11}"#) })
            let changed = Date()
            try BudgetStore(connection: running.database).update(budgetUser, with: BudgetSettings(callLimit: ExactDecimal("0.02")))
            #expect(client.wait(seconds: 5) { $0.contains { $0.contains(#""type":"budget.cutoff","call_id":"CALIVE","scope":"call""#) } })
            #expect(Date().timeIntervalSince(changed) < 1.0)
        }
    }

    @Test("two server processes on one database enforce one user's month limit together")
    func twoProcessesShareTheMonthLimit() throws {
        let options = try TestPostgres.migratedDatabase()
        let database = try PostgresConnection(options)
        let token = try TokenStore(connection: database).create(name: "pipeline", kind: .ingest)
        let limit = ExactDecimal("3.00")!
        try BudgetStore(connection: database).update(budgetUser, with: BudgetSettings(callLimit: ExactDecimal(1000), monthLimit: limit))
        let servers = try [ServerProcess(database: options, extraArguments: ["--budget-tick-seconds", "1"]),
                           ServerProcess(database: options, extraArguments: ["--budget-tick-seconds", "1"])]
        defer { servers.forEach { $0.kill() } }
        let clients = try servers.map { try StreamingClient(ClientEndpoint(host: "127.0.0.1", port: $0.port, bearerToken: token)) }
        for (index, client) in clients.enumerated() {
            client.send([#"{"type":"call.start","call_id":"CAMULTI\#(index)","user_id":"\#(budgetUser)"}"#])
        }
        #expect(clients.allSatisfy { client in client.wait { $0.contains { $0.contains("call.accepted") } } })
        // Each call burns $0.03 per frame (1,000 GPT-4 Turbo output tokens) at about 50 frames per second.
        let started = Date()
        var seq = 0
        while Date().timeIntervalSince(started) < 8, !clients.allSatisfy({ $0.messages.contains { $0.contains("budget.cutoff") } }) {
            seq += 1
            for (index, client) in clients.enumerated() {
                client.send([#"{"type":"usage","call_id":"CAMULTI\#(index)","seq":\#(seq),"ts":\#(Int(Date().timeIntervalSince1970)),"service":"openai","operation":"chat_completion","model":"gpt-4-turbo","amount":"1000","unit":"output_tokens"}"#])
            }
            usleep(20_000)
        }
        let elapsed = Date().timeIntervalSince(started)
        #expect(clients.allSatisfy { $0.messages.contains { $0.contains(#""scope":"month""#) && $0.contains("budget.cutoff") } })
        usleep(500_000)
        let spent: ExactDecimal = try database.query("SELECT sum(total_cost) AS v FROM api_call_events").single().decode("v")
        // Bound: what both calls burn in one tick interval (2 calls × 50 frames/s × $0.03 × 1 s = $3).
        let burnPerSecond = ExactDecimal("3.00")!
        let overshoot = try spent.subtracting(limit)
        print("two-process month limit: spent \(spent) of \(limit) in \(String(format: "%.1f", elapsed)) s; overshoot \(overshoot) USD (bound \(burnPerSecond))")
        #expect(overshoot <= burnPerSecond)
    }
}

@Suite("Platform quotas", .serialized)
struct QuotaTests {
    @Test("a platform quota past its critical threshold raises one quota_critical alert, however many ticks pass")
    func quotaCritical() async throws {
        let running = try await RunningServer(configure: { $0.budgetTickSeconds = 1 })
        try await running.serving {
            // A quota in force now that covers the day of the call's usage (yesterday's, when the call
            // had to end before midnight).
            let start = running.callStarts()[0]
            try running.database.query("""
                INSERT INTO usage_quotas (service, quota_type, max_cost, period_start, period_end)
                VALUES ('elevenlabs', 'daily', 0.25, $1, $2::timestamptz + interval '1 day')
                """, [instant(start).startOfDay, running.clock.now.startOfDay])
            let client = try StreamingClient(running.endpoint)
            client.send(canonicalCallMessages("CAQUOTA", startingAt: start))
            #expect(client.waitForSummary())
            func alerts() -> [String] {
                (try? running.database.query("SELECT alert_type FROM cost_alerts WHERE alert_type LIKE 'quota%' ORDER BY id").map { try $0.decode("alert_type", as: String.self) }) ?? []
            }
            #expect(client.wait(seconds: 5) { _ in alerts().contains("quota_critical") })
            usleep(2_500_000)
            #expect(alerts().sorted() == ["quota_critical", "quota_warning"])
            let current = try running.database.query("SELECT current_cost FROM usage_quotas").single().decode("current_cost", as: ExactDecimal.self)
            #expect(current == ExactDecimal("0.3")!)
        }
    }
}

@Suite("Admission cannot be bypassed", .serialized)
struct AdmissionRetryTests {
    @Test("sending call.start again after call.rejected is checked again, and usage after call.end is refused")
    func retriedStartIsCheckedAgain() async throws {
        let running = try await RunningServer(prepare: setBudget(BudgetSettings(monthLimit: ExactDecimal("0.50"))))
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let start = running.canonicalCallMessages("CARETRY")[0]
            client.send([start])
            #expect(client.wait { $0.filter { $0.contains("call.rejected") }.count == 1 })
            client.send([start])
            #expect(client.wait { $0.filter { $0.contains("call.rejected") }.count == 2 })
            #expect(!client.messages.contains { $0.contains("call.accepted") })
        }
    }

    @Test("a call.start reusing an ended call id is answered call_ended: the call is not reopened, its usage not stored")
    func endedCallStaysEnded() async throws {
        let running = try await RunningServer()
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let messages = running.canonicalCallMessages("CAONCE")
            client.send(messages.prefix(3) + [messages.last!])
            #expect(client.waitForSummary())
            // The user's month is exhausted since: an old call id must not be a way around admission.
            try BudgetStore(connection: running.database).update(budgetUser, with: BudgetSettings(monthLimit: ExactDecimal("0.01")))
            client.send([messages[0], messages[3]])
            #expect(client.wait { $0.contains(#"{"type":"call.rejected","call_id":"CAONCE","reason":"call_ended"}"#) })
            #expect(client.wait { $0.contains { $0.contains(#""code":"unknown_call""#) && $0.contains(#""seq":3"#) } })
            #expect(!client.messages.contains { $0.contains(#""type":"ack","call_id":"CAONCE","seq":3"#) })
            #expect(try running.storedEvents(call: "CAONCE") == 2)
            let call = try running.database.query("SELECT status FROM calls WHERE call_id = 'CAONCE'").single()
            #expect(try call.decode("status", as: String.self) == "completed")
        }
    }

    @Test("usage that arrives after call.end is refused, not silently taken")
    func usageAfterEnd() async throws {
        let running = try await RunningServer()
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let messages = running.canonicalCallMessages("CAEND")
            client.send(messages[0...2] + [messages.last!] + [messages[3]])
            #expect(client.waitForSummary())
            #expect(client.messages.contains { $0.contains(#""code":"unknown_call""#) && $0.contains(#""seq":3"#) })
        }
    }
}
