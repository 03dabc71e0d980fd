import ArgumentParser
import VoiceMeterDatabase
import VoiceMeterServer

struct Database: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db",
        abstract: "Inspect or stop the embedded PostgreSQL cluster used when DATABASE_URL is not set.",
        subcommands: [Status.self, Stop.self]
    )

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Say where the embedded cluster lives and whether it runs.")
        func run() throws {
            let cluster = try DatabaseSelection.embeddedCluster()
            print("data directory: \(cluster.configuration.dataDirectory)")
            print("server log:     \(cluster.configuration.dataDirectory)/server.log")
            print("connect with:   psql \"\(cluster.connectionOptions)\"")
            print("running:        \(try cluster.isRunning() ? "yes" : "no")")
        }
    }

    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the embedded cluster cleanly (its data stays).")
        func run() throws {
            try DatabaseSelection.embeddedCluster().stop()
            print("The embedded PostgreSQL is stopped.")
        }
    }
}
