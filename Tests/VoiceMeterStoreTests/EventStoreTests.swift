import PostgresClient
import Testing
import VoiceMeterCrypto
import VoiceMeterDomain
import VoiceMeterStore
import VoiceMeterTestSupport

@Suite("Ledger: events and rollups, exactly once")
struct EventStoreTests {
    let options: PostgresConnectionOptions
    let connection: PostgresConnection
    let events: EventStore
    let book: PriceBook
    let start = Timestamp(rfc3339: "2026-11-22T18:00:00Z")!

    init() throws {
        options = try TestPostgres.migratedDatabase()
        connection = try PostgresConnection(options)
        events = EventStore(connection: connection)
        book = try PriceStore(connection: connection).load()
    }

    /// A priced stream for one call, as the metering actor would produce it.
    private func stream(call: String, user: String, frames: [(seq: Int64, service: String, operation: String, model: String?, unit: UsageUnit, amount: String)]) -> [UsageEvent] {
        var meter = CallBillingMeter()
        return frames.map { frame in
            let usage = MeteredUsage(service: frame.service, operation: frame.operation, model: frame.model, unit: frame.unit,
                                     amount: ExactDecimal(frame.amount)!, occurredAt: start.adding(seconds: frame.seq * 10))
            return UsageEvent(
                key: EventKey(callID: call, seq: frame.seq), userID: user, callStartedAt: start, usage: usage,
                pricing: meter.price(usage, book: book), payloadHash: PayloadHash(sha256Of: "\(call)|\(frame)")
            )
        }
    }

    private func canonicalCall(_ call: String, user: String) -> [UsageEvent] {
        var frames: [(seq: Int64, service: String, operation: String, model: String?, unit: UsageUnit, amount: String)] = []
        var seq: Int64 = 0
        func add(_ service: String, _ operation: String, _ model: String?, _ unit: UsageUnit, _ amount: String, times: Int) {
            for _ in 0..<times { seq += 1; frames.append((seq, service, operation, model, unit, amount)) }
        }
        add("twilio", "voice_outbound", nil, .seconds, "30", times: 10)
        add("deepgram", "stt_streaming", "nova-2", .seconds, "10", times: 30)
        add("cerebras", "chat_completion", "llama3.1-8b", .tokens, "10000", times: 5)
        add("elevenlabs", "tts_generation", "eleven_turbo_v2_5", .characters, "100", times: 20)
        return stream(call: call, user: user, frames: frames)
    }

    private func decimal(_ sql: String, _ parameters: [any PostgresEncodable] = []) throws -> ExactDecimal {
        try connection.query(sql, parameters).single().decodeIfPresent("v") ?? .zero
    }

    /// Ends a call as the ledger writer does: in a commit, after its events.
    private func end(_ call: String, user: String) throws {
        _ = try events.commit([]) { _ = try CallStore.end(CallEnding(userID: user, callID: call, endedAt: start, status: "completed"), on: $0) }
    }

    @Test("payload hashes are SHA-256 (as PostgreSQL computes it) and go through bytea and back exactly")
    func payloadHashes() throws {
        #expect(try connection.query("SELECT sha256('abc'::bytea) AS h").single().decode("h", as: PayloadHash.self) == PayloadHash(sha256Of: "abc"))
        let call = canonicalCall("CA7", user: "u7")
        _ = try events.commit(Array(call[0..<3]))
        let stored = try connection.query("SELECT payload_hash FROM api_call_events WHERE call_id = 'CA7' ORDER BY seq")
            .map { try $0.decode("payload_hash", as: PayloadHash.self) }
        #expect(stored == call[0..<3].map(\.payloadHash))
        #expect(PayloadHash(bytes: [1, 2, 3]) == nil)
        #expect(PayloadHash(bytes: PayloadHash(sha256Of: "abc").bytes) == PayloadHash(sha256Of: "abc"))
    }

    @Test("duplicates and reordering store each key once and the rollups reconcile to the digit")
    func exactlyOnceAndReconciled() throws {
        let first = canonicalCall("CA1", user: "u1")
        let second = canonicalCall("CA2", user: "u1")
        let third = canonicalCall("CA3", user: "u2")
        var random = SystemRandomNumberGenerator()
        let all = (first + second + third).shuffled(using: &random)
        // Three batches that overlap: half of every batch is a resend.
        _ = try events.commit(Array(all[0..<120]))
        let resent = try events.commit(Array(all[60..<195]))
        _ = try events.commit(Array(all[100..<195]) + Array(all[0..<30]))
        #expect(resent.duplicates.count == 60)
        #expect(resent.inserted.count == 75)

        #expect(try connection.query("SELECT count(*) AS n FROM api_call_events").single().decode("n", as: Int.self) == 195)
        // A call's own row is written when it ends, from its events; ending it again replaces it.
        #expect(try connection.query("SELECT count(*) AS n FROM cost_summaries WHERE summary_type = 'call'").single().decode("n", as: Int.self) == 0)
        for (call, user) in [("CA1", "u1"), ("CA2", "u1"), ("CA3", "u2"), ("CA3", "u2")] { try end(call, user: user) }
        for call in ["CA1", "CA2", "CA3"] {
            let events = try decimal("SELECT sum(total_cost) AS v FROM api_call_events WHERE call_id = $1", [call])
            let summary = try decimal("SELECT total_cost AS v FROM cost_summaries WHERE summary_type = 'call' AND call_id = $1", [call])
            #expect(events == ExactDecimal("0.4045")!)
            #expect(summary == events)
            let byService = try connection.query("""
                SELECT twilio_cost AS t, deepgram_cost AS d, cerebras_cost AS c, elevenlabs_cost AS e, event_count AS n,
                       total_duration_seconds AS secs, total_stt_seconds AS stt, total_ai_tokens AS tok, total_tts_characters AS chars
                FROM cost_summaries WHERE summary_type = 'call' AND call_id = $1
                """, [call]).single()
            #expect(try byService.decode("t", as: ExactDecimal.self) == ExactDecimal("0.07")!)
            #expect(try byService.decode("d", as: ExactDecimal.self) == ExactDecimal("0.0295")!)
            #expect(try byService.decode("c", as: ExactDecimal.self) == ExactDecimal("0.005")!)
            #expect(try byService.decode("e", as: ExactDecimal.self) == ExactDecimal("0.3")!)
            #expect(try byService.decode("n", as: Int.self) == 65)
            #expect(try byService.decode("secs", as: ExactDecimal.self) == ExactDecimal(300))
            #expect(try byService.decode("stt", as: ExactDecimal.self) == ExactDecimal(300))
            #expect(try byService.decode("tok", as: ExactDecimal.self) == ExactDecimal(50_000))
            #expect(try byService.decode("chars", as: ExactDecimal.self) == ExactDecimal(2_000))
        }
        // The period levels: journaled by the commits, exact in period_rollups before and after a fold.
        let u1Events = try decimal("SELECT sum(total_cost) AS v FROM api_call_events WHERE user_id = 'u1'")
        #expect(u1Events == ExactDecimal("0.809")!)
        for table in ["period_rollups", "cost_summaries"] {
            if table == "cost_summaries" {
                #expect(try decimal("SELECT sum(total_cost) AS v FROM cost_summaries WHERE summary_type <> 'call'") == .zero)
                try Rollups.fold(on: connection)
            }
            #expect(try decimal("SELECT total_cost AS v FROM \(table) WHERE summary_type = 'user_day' AND user_id = 'u1'") == u1Events)
            #expect(try decimal("SELECT total_cost AS v FROM \(table) WHERE summary_type = 'user_month' AND user_id = 'u1'") == u1Events)
            #expect(try decimal("SELECT total_cost AS v FROM \(table) WHERE summary_type = 'platform_day'") == ExactDecimal("1.2135")!)
            #expect(try decimal("SELECT event_count AS v FROM \(table) WHERE summary_type = 'platform_day'") == ExactDecimal(195))
        }
        #expect(try decimal("SELECT count(*) AS v FROM rollup_journal") == .zero)
    }

    @Test("a fold moves the journal into the period rows once: folding again, or a resend after it, adds nothing")
    func foldOnce() throws {
        let call = canonicalCall("CA5", user: "u5")
        let spend = { try BudgetStore(connection: connection).spend(of: ["u5"], at: start)["u5"] }
        _ = try events.commit(Array(call[0..<40]))
        // Ten Twilio frames (five billed minutes) and thirty Deepgram ones: $0.07 + $0.0295.
        #expect(try spend()?.day == ExactDecimal("0.0995")!)
        try Rollups.fold(on: connection)
        _ = try events.commit(Array(call[20..<65]))
        // Half folded, half journaled: budgets see both.
        #expect(try spend()?.day == ExactDecimal("0.4045")!)
        #expect(try spend()?.month == ExactDecimal("0.4045")!)
        try Rollups.fold(on: connection)
        try Rollups.fold(on: connection)
        _ = try events.commit(call)
        #expect(try decimal("SELECT count(*) AS v FROM rollup_journal") == .zero)
        let month = try connection.query("""
            SELECT total_cost AS c, event_count AS n, period_end = '2026-12-01T00:00:00Z' AS whole_month FROM cost_summaries
            WHERE summary_type = 'user_month' AND user_id = 'u5' AND period_start = '2026-11-01T00:00:00Z'
            """).single()
        #expect(try month.decode("c", as: ExactDecimal.self) == ExactDecimal("0.4045")!)
        #expect(try month.decode("n", as: Int.self) == 65)
        #expect(try month.decode("whole_month", as: Bool.self))
        #expect(try spend()?.month == ExactDecimal("0.4045")!)
    }

    @Test("budget spend counts unfolded rows of every day of the month, today's in the day, other months in neither")
    func spendAcrossDays() throws {
        // The canonical call's 65 frames spread over yesterday, today, a later day of the month and
        // the next month (a client's clock may run ahead): $0.4045 in all.
        var call = canonicalCall("CAD", user: "u-days")
        for index in call.indices {
            let day: Int64 = [-1, 0, 3, 10][index % 4]
            call[index].usage.occurredAt = start.adding(seconds: day * 86_400)
        }
        _ = try events.commit(call)
        func cost(_ days: [Int64]) throws -> ExactDecimal {
            var total = ExactDecimal.zero
            for (index, event) in call.enumerated() where days.contains([-1, 0, 3, 10][index % 4]) {
                if case .priced(let priced) = event.pricing { total = try total.adding(priced.totalCost) }
            }
            return total
        }
        for folded in [false, true] {
            if folded { try Rollups.fold(on: connection) }
            let spend = try #require(try BudgetStore(connection: connection).spend(of: ["u-days"], at: start)["u-days"])
            #expect(try spend.day == cost([0]))
            #expect(try spend.month == cost([-1, 0, 3]))
            #expect(spend.month < ExactDecimal("0.4045")!)
        }
    }

    @Test("a fold leaves the journal rows of a transaction still in flight to the next fold, and counts them once")
    func foldWithCommitInFlight() throws {
        let inFlight = try PostgresConnection(options)
        try inFlight.runScript("""
            BEGIN;
            INSERT INTO rollup_journal SELECT 'u-flight', '2026-11-22T00:00:00Z', 0, 0, 0, 0, 1.5, 0, 1.5, 0, 0, 0, 100, 1, 0;
            """)
        _ = try events.commit(canonicalCall("CAF", user: "u-main"))
        #expect(try Rollups.fold(on: connection).rows == 1)
        try inFlight.runScript("COMMIT")
        #expect(try decimal("SELECT total_cost AS v FROM period_rollups WHERE summary_type = 'platform_day'") == ExactDecimal("1.9045")!)
        #expect(try decimal("SELECT total_cost AS v FROM cost_summaries WHERE summary_type = 'platform_day'") == ExactDecimal("0.4045")!)
        #expect(try Rollups.fold(on: connection).rows == 1)
        #expect(try Rollups.fold(on: connection).rows == 0)
        #expect(try decimal("SELECT total_cost AS v FROM cost_summaries WHERE summary_type = 'platform_day'") == ExactDecimal("1.9045")!)
        #expect(try decimal("SELECT total_cost AS v FROM cost_summaries WHERE summary_type = 'user_month' AND user_id = 'u-flight'")
                == ExactDecimal("1.5")!)
    }

    @Test("a sweep in small steps folds each user's rows once, all of a user's rows in one step")
    func foldSweep() throws {
        let users = (0..<12).map { "sweep-user-\($0)" }
        for (index, user) in users.enumerated() {
            let call = canonicalCall("CS\(index)", user: user)
            // Two commits: two journal rows per user, which a step must take together.
            _ = try events.commit(Array(call[0..<30]))
            _ = try events.commit(Array(call[30...]))
        }
        #expect(try decimal("SELECT count(*) AS v FROM rollup_journal") == ExactDecimal(24))
        var steps: [Rollups.Folded] = []
        var after = ""
        repeat {
            steps.append(try Rollups.fold(on: connection, step: (after, 5)))
            after = steps.last!.lastUser ?? ""
        } while !after.isEmpty
        // Five rows reach into a third user, whose two rows both go: three users (six rows) a step.
        #expect(steps.map(\.rows) == [6, 6, 6, 6, 0])
        #expect(steps.dropLast().map(\.lastUser) == ["sweep-user-10", "sweep-user-3", "sweep-user-6", "sweep-user-9"])
        #expect(try decimal("SELECT count(*) AS v FROM rollup_journal") == .zero)
        for user in users {
            #expect(try decimal("SELECT total_cost AS v FROM cost_summaries WHERE summary_type = 'user_day' AND user_id = $1", [user])
                    == ExactDecimal("0.4045")!)
        }
        #expect(try decimal("SELECT total_cost AS v FROM cost_summaries WHERE summary_type = 'platform_day'") == ExactDecimal("4.854")!)
    }

    @Test("the same (call_id, seq) with different content is a seq_conflict and changes nothing")
    func seqConflict() throws {
        let original = canonicalCall("CA9", user: "u9")
        _ = try events.commit(original)
        var altered = original[3]
        altered.usage.amount = ExactDecimal(31)
        altered.payloadHash = PayloadHash(sha256Of: "something else")
        let result = try events.commit([altered, original[4]])
        #expect(result.conflicts == [altered.key])
        #expect(result.duplicates == [original[4].key])
        #expect(result.inserted.isEmpty)
        try end("CA9", user: "u9")
        #expect(try decimal("SELECT total_cost AS v FROM cost_summaries WHERE summary_type = 'call' AND call_id = 'CA9'") == ExactDecimal("0.4045")!)
    }

    @Test("a mixed batch tells new keys (one sent twice in it) from resends and conflicts, and stores each once")
    func mixedBatchClassified() throws {
        let call = canonicalCall("CA8", user: "u8")
        _ = try events.commit(Array(call[0..<3]))
        var altered = call[1]
        altered.payloadHash = PayloadHash(sha256Of: "something else")
        let result = try events.commit([call[3], call[0], call[4], altered, call[3]])
        #expect(result.inserted == [call[3].key, call[4].key])
        #expect(result.duplicates == [call[0].key, call[3].key])
        #expect(result.conflicts == [altered.key])
        #expect(try connection.query("SELECT count(*) AS n FROM api_call_events").single().decode("n", as: Int.self) == 5)
    }

    @Test("unpriced usage is stored and counted, then repriced exactly once a price exists")
    func repriceUnpriced() throws {
        let frames: [(seq: Int64, service: String, operation: String, model: String?, unit: UsageUnit, amount: String)] = [
            (1, "twilio", "voice_outbound", nil, .seconds, "30"),
            (2, "deepgram", "stt_streaming", "nova-3", .seconds, "30"),
            (3, "deepgram", "stt_streaming", "nova-3", .seconds, "30"),
            (4, "twilio", "voice_outbound", nil, .seconds, "30"),
        ]
        let stream = stream(call: "CA7", user: "u7", frames: frames)
        #expect(stream.filter { $0.pricing == .unpriced(.noPriceInForce) }.count == 2)
        _ = try events.commit(stream)
        try end("CA7", user: "u7")
        let unpriced = try connection.query("SELECT unpriced_event_count AS n, total_cost AS c FROM cost_summaries WHERE summary_type = 'call'").single()
        #expect(try unpriced.decode("n", as: Int.self) == 2)
        #expect(try unpriced.decode("c", as: ExactDecimal.self) == ExactDecimal("0.014")!)
        let alerts = try connection.query("SELECT message FROM cost_alerts WHERE alert_type = 'unpriced_usage' AND call_id = 'CA7'")
        #expect(alerts.count == 1)
        #expect(try alerts.first?.decode("message", as: String.self).contains("deepgram/stt_streaming/nova-3 per seconds") == true)

        let prices = PriceStore(connection: connection)
        try prices.set(PriceInput.change(.init(service: "deepgram", operation: "stt_streaming", model: "nova-3", unit: "minutes",
                                               price: "0.0077", increment: "1s", effectiveFrom: "2026-01-01T00:00:00Z"), now: start))
        let repricer = Repricer(connection: connection)
        let summary = try repricer.run(book: prices.load())
        #expect(summary == RepriceSummary(callsExamined: 1, eventsPriced: 2, eventsStillUnpriced: 0))
        #expect(try repricer.run(book: prices.load()) == RepriceSummary())

        let after = try connection.query("""
            SELECT unpriced_event_count AS n, total_cost AS c, deepgram_cost AS d, event_count AS e
            FROM cost_summaries WHERE summary_type = 'call'
            """).single()
        #expect(try after.decode("n", as: Int.self) == 0)
        #expect(try after.decode("e", as: Int.self) == 4)
        #expect(try after.decode("d", as: ExactDecimal.self) == ExactDecimal("0.0077")!)
        #expect(try after.decode("c", as: ExactDecimal.self) == ExactDecimal("0.0217")!)
        #expect(try decimal("SELECT sum(total_cost) AS v FROM api_call_events") == ExactDecimal("0.0217")!)
        #expect(try decimal("SELECT total_cost AS v FROM period_rollups WHERE summary_type = 'platform_day'") == ExactDecimal("0.0217")!)
        #expect(try decimal("SELECT unpriced_event_count AS v FROM period_rollups WHERE summary_type = 'user_day'") == .zero)
    }

    @Test("reconciliation marks matching events verified, records differences, and keeps unmatched reports")
    func reconciliation() throws {
        _ = try events.commit(canonicalCall("CA0001", user: "u1"))
        let reports = try ReconciliationFile.twilio("CallSid,Duration,Price\nCA0001,300,-0.07000\nCA9999,60,-0.01400\n")
            + ReconciliationFile.generic("call_id,service,actual_cost\nCA0001,deepgram,0.0300\n")
        let lines = try ReconciliationStore(connection: connection).reconcile(reports, source: "test")
        #expect(lines.map(\.difference) == [ExactDecimal.zero, nil, ExactDecimal("0.0005")!])
        let verified = try connection.query("SELECT service, bool_and(NOT estimated) AS verified FROM api_call_events GROUP BY service ORDER BY service")
        #expect(try verified.map { "\(try $0.decode("service", as: String.self))=\(try $0.decode("verified", as: Bool.self))" }
                == ["cerebras=false", "deepgram=true", "elevenlabs=false", "twilio=true"])
        let recorded = try connection.query("SELECT count(*) AS n, count(*) FILTER (WHERE NOT matched) AS unmatched FROM cost_reconciliations").single()
        #expect(try recorded.decode("n", as: Int.self) == 3)
        #expect(try recorded.decode("unmatched", as: Int.self) == 1)
    }

    @Test("usage totals past 10^15 units (a day of the largest frames) are stored and folded exactly, and the fold goes on to the next user")
    func rollupsHoldAnySum() throws {
        let huge = stream(call: "CAHUGE", user: "u-huge", frames: (1...1_001).map { ($0, "unpriced-stt", "stt_streaming", nil, .seconds, "1000000000000") })
        _ = try events.commit(huge)
        try end("CAHUGE", user: "u-huge")
        _ = try events.commit(canonicalCall("CASMALL", user: "u-small"))
        _ = try Rollups.fold(on: connection)
        #expect(try decimal("SELECT total_stt_seconds AS v FROM cost_summaries WHERE summary_type = 'call' AND call_id = 'CAHUGE'")
            == ExactDecimal("1001000000000000")!)
        #expect(try decimal("SELECT total_stt_seconds AS v FROM cost_summaries WHERE summary_type = 'user_day' AND user_id = 'u-huge'")
            == ExactDecimal("1001000000000000")!)
        #expect(try decimal("SELECT total_cost AS v FROM cost_summaries WHERE summary_type = 'user_day' AND user_id = 'u-small'")
            == ExactDecimal("0.4045")!)
    }
}
