import Foundation
import PostgresClient
import Testing
import VoiceMeterDomain
import VoiceMeterStore
import VoiceMeterTestSupport

@Suite("Budget grants: take_budget_grant never gives two holders the same money")
struct BudgetGrantStoreTests {
    let asOf = Timestamp(rfc3339: "2026-11-22T18:00:00Z")!

    private func d(_ text: String) -> ExactDecimal { ExactDecimal(text)! }

    private func request(_ user: String = "u1", keep: String = "0", want: String, minimum: String = "0", lease: Int64 = 60) -> GrantRequest {
        GrantRequest(userID: user, number: 1, keep: d(keep), want: d(want), minimum: d(minimum), defaultDayLimit: nil,
                     defaultMonthLimit: d("3.00"), asOf: asOf, leaseSeconds: lease, purpose: .topUp)
    }

    @Test("reservations of $0.90 against a $3.00 month: three fit, the fourth gets nothing, and its scope is named")
    func reservationsAreAllOrNothing() throws {
        let store = BudgetStore(connection: try PostgresConnection(try TestPostgres.migratedDatabase()))
        let answers = try ["a", "b", "c", "d"].map { try store.takeGrant(request(want: "0.90", minimum: "0.90"), holder: $0) }
        #expect(answers.map(\.extra) == [d("0.90"), d("0.90"), d("0.90"), .zero])
        #expect(answers[3].shortScope == .month)
        #expect(answers[3].othersHeld == d("2.70"))
        // A top-up takes what is left, and a return gives it back.
        #expect(try store.takeGrant(request(want: "1.00"), holder: "d").extra == d("0.30"))
        #expect(try store.takeGrant(request(keep: "0", want: "0"), holder: "a").held == .zero)
        #expect(try store.grants(of: "u1").map(\.holder) == ["b", "c", "d"])
    }

    @Test("committed spend and the user's own settings count: a $1.00 day limit set for the user binds before the default month")
    func committedSpendAndSettingsCount() throws {
        let connection = try PostgresConnection(try TestPostgres.migratedDatabase())
        let store = BudgetStore(connection: connection)
        try store.update("u1", with: BudgetSettings(dayLimit: d("1.00")))
        try connection.query("""
            INSERT INTO rollup_journal (user_id, period_start, twilio_cost, deepgram_cost, cerebras_cost, openai_cost, elevenlabs_cost, other_cost,
                total_cost, total_duration_seconds, total_stt_seconds, total_ai_tokens, total_tts_characters, event_count, unpriced_event_count)
            VALUES ('u1', $1, 0, 0, 0, 0.40, 0, 0, 0.40, 0, 0, 0, 0, 1, 0)
            """, [asOf.startOfDay])
        let answer = try store.takeGrant(request(want: "5.00"), holder: "a")
        #expect(answer.extra == d("0.60"))
        #expect(answer.daySpent == d("0.40"))
        #expect(answer.shortScope == .day)
    }

    @Test("a holder that stopped renewing keeps its grant until its lease ends; then it is removed, counted, and its money is free")
    func expiredGrantsAreFreed() throws {
        let connection = try PostgresConnection(try TestPostgres.migratedDatabase())
        let store = BudgetStore(connection: connection)
        _ = try store.takeGrant(request(want: "3.00", lease: 60), holder: "dead")
        #expect(try store.takeGrant(request(want: "1.00"), holder: "alive").extra == .zero)
        try connection.query("UPDATE budget_grants SET expires_at = now() - interval '1 second' WHERE holder = 'dead'")
        let after = try store.takeGrant(request(want: "1.00"), holder: "alive")
        #expect(after.extra == d("1.00"))
        #expect(after.expired == 1)
        // The dead holder, back with what it believed it kept, keeps only what still fits.
        #expect(try store.takeGrant(request(keep: "3.00", want: "0"), holder: "dead").held == d("2.00"))
    }

    @Test("a renewal extends, in one statement, only the holder's grants whose lease still runs; amounts stay as they are")
    func renewalExtendsLiveLeasesOnly() throws {
        let connection = try PostgresConnection(try TestPostgres.migratedDatabase())
        let store = BudgetStore(connection: connection)
        for user in ["u1", "u2", "u3"] { _ = try store.takeGrant(request(user, want: "0.50", lease: 60), holder: "core0") }
        _ = try store.takeGrant(request("u1", want: "0.50", lease: 60), holder: "core1")
        try connection.query("UPDATE budget_grants SET expires_at = now() + interval '5 seconds' WHERE holder = 'core0'")
        try connection.query("UPDATE budget_grants SET expires_at = now() - interval '1 second' WHERE user_id = 'u3'")
        let renewed = try store.renewGrants(GrantRenewal(number: 1, userIDs: ["u1", "u2", "u3", "u4"], asOf: asOf, leaseSeconds: 600),
                                            holder: "core0")
        #expect(renewed == ["u1", "u2"], "u3's lease ran out; u4 holds nothing")
        let leases = try connection.query("""
            SELECT user_id, holder, amount, expires_at > now() + interval '500 seconds' AS extended FROM budget_grants ORDER BY user_id, holder
            """).map { "\(try $0.decode("user_id", as: String.self))/\(try $0.decode("holder", as: String.self)) \(try $0.decode("amount", as: ExactDecimal.self)) \(try $0.decode("extended", as: Bool.self))" }
        #expect(leases == ["u1/core0 0.5 true", "u1/core1 0.5 false", "u2/core0 0.5 true", "u3/core0 0.5 false"])
    }

    @Test("eight connections taking $0.10 grants at once from a $3.00 month: exactly thirty succeed, never more than the limit held")
    func concurrentTakesNeverOvercommit() throws {
        let options = try TestPostgres.migratedDatabase()
        let taken = Locked(0)
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            guard let connection = try? PostgresConnection(options) else { return }
            let store = BudgetStore(connection: connection)
            var held = ExactDecimal.zero
            for _ in 0..<10 {
                guard let answer = try? store.takeGrant(request(keep: held.description, want: "0.10", minimum: "0.10"), holder: "core\(worker)")
                else { continue }
                held = answer.held
                if answer.extra > .zero { taken.withLock { $0 += 1 } }
            }
        }
        #expect(taken.value == 30)
        let total = try PostgresConnection(options).query("SELECT coalesce(sum(amount), 0) AS held FROM budget_grants").single()
        #expect(try total.decode("held", as: ExactDecimal.self) == d("3.00"))
    }
}
