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
    func ingestRole() throws {
        let options = try TestPostgres.migratedDatabase()
        let admin = try PostgresConnection(options)
        try admin.runScript(Self.script)
        let ingestUser = "vm_ingest_\(getpid())_\(UInt32.random(in: 0...UInt32.max))"
        let financeUser = "vm_finance_\(getpid())_\(UInt32.random(in: 0...UInt32.max))"
        try admin.runScript("CREATE ROLE \(ingestUser) LOGIN IN ROLE voicemeter_ingest; CREATE ROLE \(financeUser) LOGIN IN ROLE voicemeter_finance")
        defer { try? admin.runScript("DROP ROLE IF EXISTS \(ingestUser); DROP ROLE IF EXISTS \(financeUser)") }
        let token = try TokenStore(connection: admin).create(name: "pipeline", kind: .ingest)

        var ingestOptions = options
        ingestOptions.overrides.append(("user", ingestUser))
        var configuration = ServerConfiguration(database: ingestOptions)
        configuration.listener.port = 0
        configuration.writerFlushIntervalMilliseconds = 20
        let server = try VoiceMeterServer.start(configuration: configuration, migrations: try TestPostgres.migrations(),
                                                logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        defer { server.shutdown() }
        let recorder = ClientRecorder()
        let client = try WebSocketClient { recorder.record($0, $1) }
        defer { client.shutdown() }
        let connection = client.connect(to: ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: token))
        for message in canonicalCallMessages("CAROLE") { client.send(message, on: connection) }
        #expect(recorder.wait { recorder.messages(of: connection).last?.contains(#""cost":"0.4045""#) == true })

        let ingest = try PostgresConnection(ingestOptions)
        let update = #expect(throws: PostgresError.self) { try ingest.query("UPDATE api_call_events SET total_cost = 0") }
        #expect(update?.sqlState == .insufficientPrivilege)
        let delete = #expect(throws: PostgresError.self) { try ingest.query("DELETE FROM api_call_events") }
        #expect(delete?.sqlState == .insufficientPrivilege)

        var financeOptions = options
        financeOptions.overrides.append(("user", financeUser))
        let finance = try PostgresConnection(financeOptions)
        #expect(try finance.query("SELECT count(*) AS n FROM api_call_events").single().decode("n", as: Int.self) == 70)
        let write = #expect(throws: PostgresError.self) { try finance.query("DELETE FROM cost_summaries") }
        #expect(write?.sqlState == .insufficientPrivilege)
    }
}
