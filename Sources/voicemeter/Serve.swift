import ArgumentParser
import PostgresClient

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the metering server (WebSocket ingress at /v1/stream)."
    )

    @OptionGroup var database: DatabaseOptions

    func run() throws {
        let connection = try database.connect()
        let prices = try connection.query("SELECT count(*) AS n FROM service_pricing WHERE effective_to IS NULL").single()
        print("Database ready: \(connection.options), \(try prices.decode("n", as: Int.self)) prices in force.")
        throw CommandFailure("the WebSocket ingress is not built yet (issue 4, 'Streaming ingress'); `serve` cannot accept streams until it lands")
    }
}
