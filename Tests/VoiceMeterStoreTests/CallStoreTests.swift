import Foundation
import PostgresClient
import Testing
import VoiceMeterDomain
import VoiceMeterStore
import VoiceMeterTestSupport

@Suite("Calls: one owner per call id")
struct CallStoreTests {
    let start = Timestamp(rfc3339: "2026-11-22T18:00:00Z")!

    @Test("two users registering the same new call ids at once: each id gets one owner, and the refused start leaves no row")
    func concurrentRegistrationsHaveOneOwner() throws {
        let options = try TestPostgres.migratedDatabase()
        let ids = (1...60).map { "CARACE\($0)" }
        let outcomes = Locked<[String: [String]]>([:])
        DispatchQueue.concurrentPerform(iterations: 2) { index in
            let user = index == 0 ? "user-a" : "user-b"
            guard let connection = try? PostgresConnection(options) else { return }
            let store = CallStore(connection: connection)
            for id in ids {
                let outcome = switch try? store.register(CallStart(callID: id, userID: user, revenue: ExactDecimal(1_000)), startedAt: start) {
                case .registered?: "registered"
                case .belongsToAnotherUser?: "refused"
                case .ended?: "ended"
                case nil: "failed"
                }
                outcomes.withLock { $0[id, default: []].append(outcome) }
            }
        }
        for id in ids { #expect(outcomes.value[id]?.sorted() == ["refused", "registered"], "\(id): \(outcomes.value[id] ?? [])") }
        let database = try PostgresConnection(options)
        let rows = try database.query("SELECT count(*) AS n, count(DISTINCT call_id) AS ids FROM calls").single()
        #expect(try rows.decode("n", as: Int.self) == ids.count)
        #expect(try rows.decode("ids", as: Int.self) == ids.count)
    }

    @Test("another user's start of an ended call is refused and leaves no calls row: no phantom revenue in monthly_pnl")
    func refusedStartWritesNothing() throws {
        let options = try TestPostgres.migratedDatabase()
        let connection = try PostgresConnection(options)
        let store = CallStore(connection: connection)
        guard case .registered = try store.register(CallStart(callID: "CA1", userID: "user-a", revenue: ExactDecimal("4.99")!), startedAt: start) else {
            Issue.record("not registered")
            return
        }
        _ = try CallStore.end(CallEnding(userID: "user-a", callID: "CA1", endedAt: start.adding(seconds: 300), status: "completed"), on: connection)
        guard case .belongsToAnotherUser = try store.register(CallStart(callID: "CA1", userID: "user-b", revenue: ExactDecimal(1_000)), startedAt: start) else {
            Issue.record("user-b's start was not refused")
            return
        }
        let database = try PostgresConnection(options)
        #expect(try database.query("SELECT count(*) AS n FROM calls WHERE call_id = 'CA1'").single().decode("n", as: Int.self) == 1)
        #expect(try database.query("SELECT sum(revenue) AS r FROM calls").single().decode("r", as: ExactDecimal.self) == ExactDecimal("4.99")!)
    }
}
