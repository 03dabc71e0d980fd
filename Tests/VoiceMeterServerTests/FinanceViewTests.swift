import Foundation
import PostgresClient
import Testing
import VoiceMeterDomain
import VoiceMeterServer
import VoiceMeterStore
import EmbeddedPostgres
import VoiceMeterTestSupport

@Suite("Finance views reconcile with the ledger", .serialized)
struct FinanceViewTests {
    @Test("two canonical calls: per-call margin, the month's P&L and the fixed-cost split add up exactly")
    func marginsAndMonth() async throws {
        let running = try await RunningServer()
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let starts = running.callStarts(2)
            client.send(canonicalCallMessages("CAFIN1", startingAt: starts[0]) + canonicalCallMessages("CAFIN2", startingAt: starts[1]))
            #expect(client.wait(seconds: 20) { $0.filter { $0.contains("call.summary") }.count == 2 })
            let database = running.database

            let rows = try database.query("""
                SELECT call_id, api_cost, payment_fee, fixed_cost_share, total_cost, margin, margin_pct, twilio_cost, elevenlabs_cost, duration_seconds
                FROM call_margins ORDER BY call_id
                """)
            #expect(rows.count == 2)
            for row in rows {
                #expect(try row.decode("api_cost", as: ExactDecimal.self) == ExactDecimal("0.4045")!)
                #expect(try row.decode("payment_fee", as: ExactDecimal.self) == ExactDecimal("0.46966")!)
                #expect(try row.decode("twilio_cost", as: ExactDecimal.self) == ExactDecimal("0.07")!)
                #expect(try row.decode("elevenlabs_cost", as: ExactDecimal.self) == ExactDecimal("0.3")!)
                #expect(try row.decode("duration_seconds", as: ExactDecimal.self) == ExactDecimal(300))
                // Raindrop $20 + Vultr $6 over the month's two calls.
                #expect(try row.decode("fixed_cost_share", as: ExactDecimal.self) == ExactDecimal(13))
                #expect(try row.decode("total_cost", as: ExactDecimal.self) == ExactDecimal("13.87416")!)
                #expect(try row.decode("margin", as: ExactDecimal.self) == ExactDecimal("-8.88416")!)
            }
            let month = try database.query("""
                SELECT calls, revenue, api_cost, payment_fees, fixed_costs, gross_profit, break_even_calls FROM monthly_pnl
                """).single()
            #expect(try month.decode("calls", as: Int.self) == 2)
            #expect(try month.decode("revenue", as: ExactDecimal.self) == ExactDecimal("9.98")!)
            #expect(try month.decode("api_cost", as: ExactDecimal.self) == ExactDecimal("0.809")!)
            #expect(try month.decode("payment_fees", as: ExactDecimal.self) == ExactDecimal("0.93932")!)
            #expect(try month.decode("fixed_costs", as: ExactDecimal.self) == ExactDecimal(26))
            #expect(try month.decode("gross_profit", as: ExactDecimal.self) == ExactDecimal("-17.76832")!)
            // 26 / (4.99 − 0.87416) = 6.3…, so 7 calls a month break even.
            #expect(try month.decode("break_even_calls", as: Int.self) == 7)
            let ledger: ExactDecimal = try database.query("SELECT sum(total_cost) AS v FROM api_call_events").single().decode("v")
            #expect(ledger == ExactDecimal("0.809")!)

            // The same figures through the report queries the CLI prints.
            let finance = FinanceStore(connection: database)
            let callMonth = instant(starts[0]).startOfMonth
            let nextMonth = callMonth.adding(seconds: 32 * 86_400).startOfMonth
            #expect(try finance.margins(from: callMonth, to: nextMonth, userID: nil).rows.count == 2)
            #expect(try finance.margins(from: callMonth, to: nextMonth, userID: "someone-else").rows.isEmpty)
            let pnl = try finance.month(callMonth)
            #expect(pnl.rows.count == 1)
            #expect(pnl.rows.first?[pnl.columns.firstIndex(of: "gross_profit")!].flatMap { ExactDecimal($0) } == ExactDecimal("-17.76832")!)
            let top = try finance.topUsers(month: callMonth, limit: 5)
            #expect(top.rows.map { $0[0] } == [budgetUser])
            #expect(top.rows.first?[1].flatMap { ExactDecimal($0) } == ExactDecimal("0.809")!)
            #expect(try finance.callEvents("CAFIN1").rows.count == 70)
            #expect(try finance.callMargin("CAFIN1").rows.count == 1)
        }
    }

    @Test("fixed costs split over three calls still add up to the cent-exact monthly amount")
    func fixedSplitIsExact() async throws {
        let running = try await RunningServer()
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let starts = running.callStarts(3)
            for (index, call) in ["CAS1", "CAS2", "CAS3"].enumerated() {
                let messages = canonicalCallMessages(call, startingAt: starts[index])
                client.send([messages[0], messages.last!])
            }
            #expect(client.wait(seconds: 20) { $0.filter { $0.contains("call.summary") }.count == 3 })
            let shares = try running.database.query("SELECT fixed_cost_share FROM call_margins ORDER BY started_at")
                .map { try $0.decode("fixed_cost_share", as: ExactDecimal.self) }
            #expect(shares.count == 3)
            #expect(try shares.reduce(ExactDecimal.zero) { try $0.adding($1) } == ExactDecimal(26))
            #expect(shares[1] == ExactDecimal("8.6666666666")!)
        }
    }

    @Test("user_spend shows today's and this month's spend against the limits")
    func userSpend() async throws {
        let running = try await RunningServer(prepare: setBudget(BudgetSettings(dayLimit: ExactDecimal(5), monthLimit: ExactDecimal(50))))
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let start = running.callStarts()[0]
            client.send(canonicalCallMessages("CASPEND", startingAt: start))
            #expect(client.waitForSummary())
            // As of the call's end: its day and month (today, or yesterday when it ended before midnight).
            let row = try running.database.query("SELECT * FROM user_spend_at($2) WHERE user_id = $1", [budgetUser, instant(start + 300)]).single()
            #expect(try row.decode("spent_today", as: ExactDecimal.self) == ExactDecimal("0.4045")!)
            #expect(try row.decode("remaining_today", as: ExactDecimal.self) == ExactDecimal("4.5955")!)
            #expect(try row.decode("remaining_this_month", as: ExactDecimal.self) == ExactDecimal("49.5955")!)
            #expect(try row.decode("call_limit", as: ExactDecimal.self) == ExactDecimal(10))
        }
    }
}

@Suite("Finance read API", .serialized)
struct FinanceAPITests {
    /// GET over a plain socket; returns the status code and the body.
    func get(_ port: Int, _ path: String, token: String?, accept: String? = nil) throws -> (Int, String) {
        let socket = try RawSocket(port: port)
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if let token { request += "Authorization: Bearer \(token)\r\n" }
        if let accept { request += "Accept: \(accept)\r\n" }
        socket.send(request + "\r\n")
        let (response, _) = socket.readUntilClosed()
        let status = Int(response.split(separator: " ").dropFirst().first ?? "") ?? 0
        let body = response.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        return (status, body)
    }

    @Test("finance tokens read margins (JSON or CSV), call costs and months; ingest tokens get 403; bad parameters 400")
    func readAPI() async throws {
        let (running, token) = try await RunningServer.withFinanceToken()
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            client.send(running.canonicalCallMessages("CAAPI"))
            #expect(client.waitForSummary())
            let port = running.server.port

            #expect(try get(port, "/v1/finance/months", token: nil).0 == 401)
            let forbidden = try get(port, "/v1/finance/months", token: running.token)
            #expect(forbidden.0 == 403)
            #expect(forbidden.1.contains("finance token"))

            let callDay = instant(running.callStarts()[0]).startOfDay
            let (from, to) = (callDay.description.prefix(10), callDay.adding(seconds: 86_400).description.prefix(10))
            let margins = try get(port, "/v1/finance/margins?from=\(from)&to=\(to)", token: token)
            #expect(margins.0 == 200)
            let parsed = try JSONParser.parse(margins.1)
            guard case .array(let rows) = parsed else { Issue.record("not an array: \(margins.1)"); return }
            #expect(rows.count == 1)
            #expect(rows.first?["api_cost"] == .string("0.4045000000"))
            #expect(rows.first?["payment_fee"] == .string("0.4696600000"))

            let csv = try get(port, "/v1/finance/margins?from=\(from)&to=\(to)", token: token, accept: "text/csv")
            #expect(csv.0 == 200)
            #expect(csv.1.hasPrefix("call_id,user_id,started_at,"))
            #expect(csv.1.contains("CAAPI,"))

            let bad = try get(port, "/v1/finance/margins?from=yesterday&to=\(to)", token: token)
            #expect(bad.0 == 400)
            #expect(bad.1.contains("'from' must be a day"))
            #expect(try get(port, "/v1/finance/margins?to=\(to)", token: token).0 == 400)

            let costs = try get(port, "/v1/calls/CAAPI/costs", token: token)
            #expect(costs.0 == 200)
            #expect(costs.1.contains(#""api_cost":"0.4045000000""#))
            #expect(costs.1.contains(#""events":[{"seq":"1""#))
            #expect(try get(port, "/v1/calls/NOPE/costs", token: token).0 == 404)
            #expect(try get(port, "/v1/finance/months", token: token).1.contains(#""month":"\#(callDay.description.prefix(7))""#))
            #expect(try get(port, "/v1/users/\(budgetUser)/spend", token: token).0 == 200)
        }
    }
}

@Suite("Finance at seed 002's scale", .serialized)
struct FinanceScaleTests {
    @Test("the canonical call at $4.99 in a month of 1,000 calls: fixed share 0.026, margin 4.08984")
    func thousandCallMonth() async throws {
        let running = try await RunningServer()
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            // 999 more calls in the same month (started and ended, no usage), from 999 users, paced
            // under the per-connection rate limit (500 messages per second).
            let starts = running.callStarts(2, spacingSeconds: 120)
            client.send(canonicalCallMessages("CASEED", startingAt: starts[1]))
            for index in 1...999 {
                let start = starts[0]
                client.send([#"{"type":"call.start","call_id":"CAFILL\#(index)","user_id":"filler-\#(index)","ts":\#(start)}"#,
                             #"{"type":"call.end","call_id":"CAFILL\#(index)","ts":\#(start + 60)}"#])
                if index % 100 == 0 { usleep(500_000) }
            }
            #expect(client.wait(seconds: 60) { $0.filter { $0.contains("call.summary") }.count == 1_000 })
            let row = try running.database.query("""
                SELECT api_cost, payment_fee, fixed_cost_share, total_cost, margin FROM call_margins WHERE call_id = 'CASEED'
                """).single()
            #expect(try row.decode("api_cost", as: ExactDecimal.self) == ExactDecimal("0.4045")!)
            #expect(try row.decode("payment_fee", as: ExactDecimal.self) == ExactDecimal("0.46966")!)
            #expect(try row.decode("fixed_cost_share", as: ExactDecimal.self) == ExactDecimal("0.026")!)
            #expect(try row.decode("total_cost", as: ExactDecimal.self) == ExactDecimal("0.90016")!)
            #expect(try row.decode("margin", as: ExactDecimal.self) == ExactDecimal("4.08984")!)
            let month = try running.database.query("SELECT calls, fixed_costs FROM monthly_pnl").single()
            #expect(try month.decode("calls", as: Int.self) == 1_000)
            #expect(try month.decode("fixed_costs", as: ExactDecimal.self) == ExactDecimal(26))
        }
    }
}

@Suite("Finance dashboard", .serialized)
struct DashboardTests {
    @Test("/dashboard renders in headless Chromium with its charts and tables, for finance tokens only")
    func dashboardRenders() async throws {
        let financeToken = Locked<String>("")
        let running = try await RunningServer(prepare: { database in
            financeToken.withLock { $0 = (try? TokenStore(connection: database).create(name: "finance-ui", kind: .finance)) ?? "" }
        })
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let starts = running.callStarts(3, spacingSeconds: 10)
            for (index, revenue) in ["4.99", "0.30", "2.49"].enumerated() {
                client.send(canonicalCallMessages("CADASH\(index)", startingAt: starts[index])
                    .map { $0.replacingOccurrences(of: #""revenue":"4.99""#, with: #""revenue":"\#(revenue)""#) })
            }
            #expect(client.wait(seconds: 20) { $0.filter { $0.contains("call.summary") }.count == 3 })

            let chromium = try #require(ProcessRunner.find("chromium"), "install Debian's chromium (deploy/setup-debian.sh does)")
            let url = "http://127.0.0.1:\(running.server.port)/dashboard?token=\(financeToken.value)"
            let page = try ProcessRunner.run(chromium, ["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url])
            #expect(page.exitCode == 0)
            for expected in [#"id="margin-chart""#, #"id="daily-cost-chart""#, "<circle", "<rect", "This month's P&amp;L", "Top users this month", "Recent alerts"] {
                #expect(page.output.contains(expected), "the page lacks \(expected)")
            }
            // No external assets: nothing is fetched from anywhere else.
            #expect(!page.output.contains("src=\"http") && !page.output.contains("href=\"http"))

            // VOICEMETER_DASHBOARD_SCREENSHOT=docs/dashboard.png swift test --filter DashboardTests refreshes the docs' picture.
            if let screenshot = ProcessInfo.processInfo.environment["VOICEMETER_DASHBOARD_SCREENSHOT"] {
                _ = try ProcessRunner.run(chromium, ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                                     "--window-size=1100,1200", "--screenshot=\(screenshot)", url])
            }
            let anonymous = try ProcessRunner.run(chromium, ["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                                                              "http://127.0.0.1:\(running.server.port)/dashboard"])
            #expect(anonymous.output.contains("unauthorized"))
        }
    }
}

@Suite("Finance dashboard's token", .serialized)
struct DashboardTokenTests {
    /// The whole answer to a GET of `target` with these extra header lines.
    func get(_ target: String, on port: Int, headers: String = "") throws -> String {
        let socket = try RawSocket(port: port)
        socket.send("GET \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\n\(headers)Connection: close\r\n\r\n")
        return socket.readUntilClosed().text
    }

    @Test("a method other than GET is answered 405 with Allow: GET, whatever the path and token")
    func onlyGet() async throws {
        let (running, financeToken) = try await RunningServer.withFinanceToken()
        try await running.serving {
            for method in ["PUT", "POST", "DELETE"] {
                let socket = try RawSocket(port: running.server.port)
                socket.send("\(method) /v1/finance/months HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(financeToken)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                let answer = socket.readUntilClosed().text
                #expect(answer.hasPrefix("HTTP/1.1 405"), "\(method): \(answer)")
                #expect(answer.lowercased().contains("allow: get"))
            }
        }
    }

    @Test("?token= is taken once: the answer moves it into an HttpOnly cookie and sends the browser to /dashboard without it")
    func tokenLeavesTheURL() async throws {
        let (running, financeToken) = try await RunningServer.withFinanceToken()
        try await running.serving {
            let link = try get("/dashboard?token=\(financeToken)", on: running.server.port)
            let head = link.components(separatedBy: "\r\n\r\n")[0].lowercased()
            #expect(head.hasPrefix("http/1.1 303"), "\(link)")
            #expect(head.contains("location: /dashboard\r\n"))
            #expect(head.contains("set-cookie: voicemeter_finance=\(financeToken.lowercased()); path=/dashboard; httponly; samesite=strict"))

            let page = try get("/dashboard", on: running.server.port, headers: "Cookie: theme=dark; voicemeter_finance=\(financeToken)\r\n")
            #expect(page.hasPrefix("HTTP/1.1 200"))
            #expect(page.contains("VoiceMeter finance") && !page.contains(financeToken))
            #expect(page.lowercased().contains("referrer-policy: no-referrer"))
            // The cookie opens only the dashboard, and an ingest token's cookie nothing.
            #expect(try get("/v1/finance/months", on: running.server.port, headers: "Cookie: voicemeter_finance=\(financeToken)\r\n").contains(" 401 "))
            #expect(try get("/dashboard", on: running.server.port, headers: "Cookie: voicemeter_finance=\(running.token)\r\n").contains(" 403 "))
        }
    }
}

/// The instant of whole Unix seconds.
func instant(_ unixSeconds: Int) -> Timestamp {
    Timestamp(microsecondsSinceEpoch: Int64(unixSeconds) * 1_000_000)
}
