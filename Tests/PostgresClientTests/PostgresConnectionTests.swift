import Foundation
import PostgresClient
import Testing
import VoiceMeterTestSupport

@Suite("PostgreSQL client against a real server")
struct PostgresConnectionTests {
    let connection: PostgresConnection

    init() throws {
        connection = try PostgresConnection(try TestPostgres.emptyDatabase())
    }

    @Test("parameters travel separately from SQL and come back exactly")
    func parametersRoundTrip() throws {
        let hostile = "O'Brien; DROP TABLE x; -- \u{1F4DE} \\ tab\there"
        let row = try connection.query(
            "SELECT $1::text AS text, $2::bigint AS number, $3::boolean AS flag, $4::text AS missing, $5::bytea AS bytes",
            [hostile, Int64(-9_007_199_254_740_993), true, String?.none, PostgresBytes([0, 1, 0xfe, 0xff])]
        ).single()
        #expect(try row.decode("text", as: String.self) == hostile)
        #expect(try row.decode("number", as: Int64.self) == -9_007_199_254_740_993)
        #expect(try row.decode("flag", as: Bool.self) == true)
        #expect(try row.decodeIfPresent("missing", as: String.self) == nil)
        #expect(try row.decode("bytes", as: PostgresBytes.self).bytes == [0, 1, 0xfe, 0xff])
    }

    @Test("NUMERIC values come back as exact text, never through floating point")
    func numericIsExact() throws {
        let row = try connection.query("SELECT ($1::numeric * 3) AS cost", ["0.1000000000000000000000001"]).single()
        #expect(try row.decode("cost", as: String.self) == "0.3000000000000000000000003")
    }

    @Test("a unique violation is a typed error with SQLSTATE 23505 and the constraint name")
    func uniqueViolation() throws {
        try connection.runScript("CREATE TABLE t (id int CONSTRAINT t_pkey PRIMARY KEY)")
        try connection.query("INSERT INTO t VALUES ($1)", [1])
        let error = #expect(throws: PostgresError.self) { try connection.query("INSERT INTO t VALUES ($1)", [1]) }
        #expect(error?.kind == .server)
        #expect(error?.sqlState == .uniqueViolation)
        #expect(error?.constraint == "t_pkey")
        #expect(error?.isTransient == false)
        // The connection stays usable after a server error.
        #expect(try connection.query("SELECT count(*) AS n FROM t").single().decode("n", as: Int.self) == 1)
    }

    @Test("a transaction commits on success and rolls back entirely on error")
    func transactions() throws {
        try connection.runScript("CREATE TABLE ledger (amount numeric NOT NULL)")
        try connection.transaction { connection in
            try connection.query("INSERT INTO ledger VALUES ($1)", ["1.5"])
            try connection.query("INSERT INTO ledger VALUES ($1)", ["2.5"])
        }
        #expect(throws: PostgresError.self) {
            try connection.transaction { connection in
                try connection.query("INSERT INTO ledger VALUES ($1)", ["100"])
                try connection.query("INSERT INTO ledger VALUES ($1)", [String?.none])
            }
        }
        let total = try connection.query("SELECT sum(amount) AS total, count(*) AS n FROM ledger").single()
        #expect(try total.decode("total", as: String.self) == "4.0")
        #expect(try total.decode("n", as: Int.self) == 2)
    }

    @Test("COPY FROM STDIN carries tabs, newlines, backslashes and NULLs intact")
    func copyIn() throws {
        try connection.runScript("CREATE TABLE frames (seq int, note text)")
        let notes: [String?] = ["plain", "tab\there", "line\nbreak", "back\\slash", nil, "carriage\rreturn", "\\N literal"]
        let copied = try connection.copyIn("COPY frames (seq, note) FROM STDIN") { writer in
            for (index, note) in notes.enumerated() { try writer.append([String(index), note]) }
        }
        #expect(copied == notes.count)
        let rows = try connection.query("SELECT note FROM frames ORDER BY seq")
        #expect(try rows.map { try $0.decodeIfPresent("note", as: String.self) } == notes)
    }

    @Test("COPY of many rows streams in chunks and counts every row")
    func copyManyRows() throws {
        try connection.runScript("CREATE TABLE bulk (seq int, payload text)")
        let padding = String(repeating: "x", count: 100)
        let copied = try connection.copyIn("COPY bulk FROM STDIN") { writer in
            for seq in 1...20_000 { try writer.append([String(seq), padding]) }
        }
        #expect(copied == 20_000)
        #expect(try connection.query("SELECT sum(seq) AS s FROM bulk").single().decode("s", as: Int.self) == 200_010_000)
    }

    @Test("a failing COPY reports the server's error and leaves the connection usable")
    func copyFailure() throws {
        try connection.runScript("CREATE TABLE strict (seq int NOT NULL)")
        let error = #expect(throws: PostgresError.self) {
            try connection.copyIn("COPY strict FROM STDIN") { writer in
                try writer.append(["1"])
                try writer.append(["not a number"])
            }
        }
        #expect(error?.sqlState == SQLState("22P02"))
        #expect(try connection.query("SELECT count(*) AS n FROM strict").single().decode("n", as: Int.self) == 0)
    }

    @Test("LISTEN receives a NOTIFY from another connection, only after it commits")
    func listenNotify() throws {
        let sender = try PostgresConnection(connection.options)
        try connection.listen("price changes")
        try sender.transaction { sender in
            try sender.notify("price changes", payload: "twilio")
            #expect(try connection.waitForNotifications(timeoutMilliseconds: 200).isEmpty)
        }
        let received = try connection.waitForNotifications(timeoutMilliseconds: 5_000)
        #expect(received.map(\.payload) == ["twilio"])
        #expect(received.first?.channel == "price changes")
        #expect(received.first?.senderProcessID == sender.backendProcessID)
    }

    @Test("a terminated session is re-established by the next command, LISTEN included")
    func reconnectAfterTermination() throws {
        let admin = try PostgresConnection(connection.options)
        try connection.listen("alerts")
        try admin.query("SELECT pg_terminate_backend($1)", [connection.backendProcessID])
        let lost = #expect(throws: PostgresError.self) { try connection.query("SELECT 1") }
        #expect(lost?.isTransient == true)
        #expect(try connection.query("SELECT 2 AS two").single().decode("two", as: Int.self) == 2)
        #expect(connection.reconnectCount == 1)
        try admin.notify("alerts", payload: "after reconnect")
        #expect(try connection.waitForNotifications(timeoutMilliseconds: 5_000).map(\.payload) == ["after reconnect"])
    }
}

@Suite("PostgreSQL connection failures")
struct PostgresConnectionFailureTests {
    @Test("an unreachable server is a connectionFailed error that never shows the password")
    func unreachableServer() throws {
        let options = PostgresConnectionOptions(connectionString: "postgresql://meter:s3cr3t-pw@127.0.0.1:1/voicemeter?connect_timeout=2")
        let error = #expect(throws: PostgresError.self) { try PostgresConnection(options) }
        #expect(error?.kind == .connectionFailed)
        #expect(error?.isTransient == true)
        #expect(error.map { !String(describing: $0).contains("s3cr3t-pw") } == true)
        #expect(!options.description.contains("s3cr3t-pw"))
        #expect(options.description.contains("password=***"))
    }

    @Test("a malformed connection string is refused with an example of a good one")
    func malformedConnectionString() throws {
        let error = #expect(throws: PostgresError.self) {
            try PostgresConnection(PostgresConnectionOptions(connectionString: "host=localhost port"))
        }
        #expect(error?.kind == .invalidArgument)
        #expect(error?.hint?.contains("postgresql://") == true)
    }
}
