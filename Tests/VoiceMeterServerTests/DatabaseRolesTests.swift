import Foundation
import Logging
import PostgresClient
import Testing
import VoiceMeterDomain
import VoiceMeterServer
import VoiceMeterStore
import VoiceMeterTestSupport
import WebSocketTransport

@Suite("Database roles (deploy/roles.sql)")
struct DatabaseRolesTests {
    static let script: String = {
        let root = URL(fileURLWithPath: TestPostgres.migrationsDirectory).deletingLastPathComponent()
        return (try? String(contentsOf: root.appendingPathComponent("deploy/roles.sql"), encoding: .utf8)) ?? ""
    }()

    @Test("the server runs as the ingest role, which cannot change or delete events; finance can only read")
    func ingestRole() async throws {
        let ingestUser = "vm_ingest_\(getpid())_\(UInt32.random(in: 0...UInt32.max))"
        let financeUser = "vm_finance_\(getpid())_\(UInt32.random(in: 0...UInt32.max))"
        let running = try await RunningServer(prepare: { admin in
            try admin.runScript(Self.script)
            try admin.runScript("CREATE ROLE \(ingestUser) LOGIN IN ROLE voicemeter_ingest; CREATE ROLE \(financeUser) LOGIN IN ROLE voicemeter_finance")
        }, configure: { $0.database.overrides.append(("user", ingestUser)) })
        defer { try? running.database.runScript("DROP ROLE IF EXISTS \(ingestUser); DROP ROLE IF EXISTS \(financeUser)") }
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            client.send(running.canonicalCallMessages("CAROLE"))
            #expect(client.wait { $0.last?.contains(#""cost":"0.4045""#) == true })

            var ingestOptions = running.options
            ingestOptions.overrides.append(("user", ingestUser))
            let ingest = try PostgresConnection(ingestOptions)
            let update = #expect(throws: PostgresError.self) { try ingest.query("UPDATE api_call_events SET total_cost = 0") }
            #expect(update?.sqlState == .insufficientPrivilege)
            let delete = #expect(throws: PostgresError.self) { try ingest.query("DELETE FROM api_call_events") }
            #expect(delete?.sqlState == .insufficientPrivilege)

            var financeOptions = running.options
            financeOptions.overrides.append(("user", financeUser))
            let finance = try PostgresConnection(financeOptions)
            #expect(try finance.query("SELECT count(*) AS n FROM api_call_events").single().decode("n", as: Int.self) == 70)
            let write = #expect(throws: PostgresError.self) { try finance.query("DELETE FROM cost_summaries") }
            #expect(write?.sqlState == .insufficientPrivilege)
        }
    }
}
