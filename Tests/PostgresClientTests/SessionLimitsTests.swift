import PostgresClient
import Testing
import VoiceMeterTestSupport

@Suite("Session limits")
struct SessionLimitsTests {
    @Test("a session opened with limits has its statement, lock and idle-transaction timeouts set")
    func timeoutsReachTheSession() throws {
        let options = try TestPostgres.emptyDatabase().limited(by: SessionLimits(connectTimeoutSeconds: 5, statementTimeoutSeconds: 30))
        let connection = try PostgresConnection(options)
        #expect(try connection.query("SHOW statement_timeout").single().decode("statement_timeout", as: String.self) == "30s")
        #expect(try connection.query("SHOW lock_timeout").single().decode("lock_timeout", as: String.self) == "10s")
        #expect(try connection.query("SHOW idle_in_transaction_session_timeout").single()
            .decode("idle_in_transaction_session_timeout", as: String.self) == "1min")
        #expect(options.conninfo.contains("connect_timeout='5'"))
        // A partitioned peer is dropped in about 10 s, whatever the statement timeout.
        #expect(options.conninfo.contains("keepalives_idle='5'"))
        #expect(options.conninfo.contains("tcp_user_timeout='10000'"))
    }

    @Test("the connection string's own values win, and its server options are kept")
    func ownValuesWin() {
        let options = PostgresConnectionOptions(connectionString: "host=db connect_timeout=2 options='-c statement_timeout=5000 -c search_path=meter'")
            .limited(by: SessionLimits(connectTimeoutSeconds: 5, statementTimeoutSeconds: 30))
        #expect(options.conninfo.contains("connect_timeout='2'"))
        #expect(!options.conninfo.contains("connect_timeout='5'"))
        #expect(options.conninfo.contains("statement_timeout=5000"))
        #expect(options.conninfo.contains("search_path=meter"))
        #expect(options.conninfo.contains("lock_timeout=10000"))
    }
}
