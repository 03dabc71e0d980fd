import ArgumentParser
import EmbeddedPostgres

struct Database: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db",
        abstract: "Inspect or stop the embedded PostgreSQL cluster used when DATABASE_URL is not set.",
        subcommands: [Status.self, Stop.self]
    )

    static func embeddedCluster() throws -> EmbeddedPostgres {
        let binaries = try PostgresBinaries.locate()
        let directory = EmbeddedPostgres.defaultDataDirectory(majorVersion: binaries.majorVersion)
        return try EmbeddedPostgres(.init(dataDirectory: directory), binaries: binaries)
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Say where the embedded cluster lives and whether it runs.")
        func run() throws {
            let cluster = try Database.embeddedCluster()
            print("data directory: \(cluster.configuration.dataDirectory)")
            print("server log:     \(cluster.configuration.dataDirectory)/server.log")
            print("connect with:   psql \"\(cluster.connectionOptions)\"")
            print("running:        \(try cluster.isRunning() ? "yes" : "no")")
        }
    }

    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the embedded cluster cleanly (its data stays).")
        func run() throws {
            try Database.embeddedCluster().stop()
            print("The embedded PostgreSQL is stopped.")
        }
    }
}
