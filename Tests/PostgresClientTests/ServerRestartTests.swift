import EmbeddedPostgres
import Foundation
import PostgresClient
import Testing
import VoiceMeterTestSupport

@Suite("Reconnecting across a real server crash and restart", .serialized)
struct ServerRestartTests {
    @Test("after an immediate stop and restart, the next command reconnects; committed rows survive")
    func reconnectAfterCrash() throws {
        let cluster = try TestPostgres.privateCluster()
        defer { try? cluster.destroy() }
        let connection = try PostgresConnection(try cluster.start())
        try connection.runScript("CREATE TABLE acked (seq int)")
        try connection.query("INSERT INTO acked VALUES ($1)", [1])

        try cluster.stop(immediately: true)
        let duringOutage = #expect(throws: PostgresError.self) { try connection.query("SELECT 1") }
        #expect(duringOutage?.isTransient == true)

        _ = try cluster.start()
        #expect(try connection.query("SELECT count(*) AS n FROM acked").single().decode("n", as: Int.self) == 1)
        #expect(connection.reconnectCount >= 1)
    }

    @Test("starting an already running cluster reuses it")
    func startReusesRunningServer() throws {
        let cluster = try TestPostgres.privateCluster()
        defer { try? cluster.destroy() }
        _ = try cluster.start()
        let first = try PostgresConnection(cluster.connectionOptions)
        let startedAt = try first.query("SELECT pg_postmaster_start_time()::text AS t").single().decode("t", as: String.self)
        _ = try cluster.start()
        let again = try PostgresConnection(cluster.connectionOptions)
        #expect(try again.query("SELECT pg_postmaster_start_time()::text AS t").single().decode("t", as: String.self) == startedAt)
        try cluster.stop()
        #expect(try cluster.isRunning() == false)
    }
}
