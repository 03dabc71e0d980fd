import PostgresClient
import Testing

@Suite("What a failure says about the data")
struct PostgresErrorTests {
    @Test("only data exceptions, constraint violations and unsendable values are data errors; outages are not", arguments: [
        ("23505", true), ("23514", true), ("22P02", true), ("22003", true),
        ("25006", false), ("42501", false), ("55P03", false), ("42P01", false), ("57P01", false), ("08006", false), ("40001", false),
    ])
    func dataErrors(code: String, isData: Bool) {
        #expect(PostgresError(kind: .server, sqlState: SQLState(code), message: "m").isDataError == isData)
    }

    @Test("a lost connection or a failed connect is never a data error; a value libpq cannot send is")
    func kinds() {
        #expect(!PostgresError(kind: .connectionLost, message: "m").isDataError)
        #expect(!PostgresError(kind: .connectionFailed, message: "m").isDataError)
        #expect(PostgresError(kind: .invalidArgument, message: "m").isDataError)
    }
}
