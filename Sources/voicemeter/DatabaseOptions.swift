import ArgumentParser
import EmbeddedPostgres
import Foundation
import PostgresClient
import VoiceMeterStore

/// Where the database is: `--database-url`, else `DATABASE_URL`, else the embedded cluster.
struct DatabaseOptions: ParsableArguments {
    @Option(
        name: .customLong("database-url"),
        help: ArgumentHelp(
            "PostgreSQL URI or conninfo (default: $DATABASE_URL; without either, the embedded cluster).",
            valueName: "url"
        )
    )
    var databaseURL: String?

    /// The connection string given by flag or environment, if any.
    var explicitURL: String? {
        if let databaseURL, !databaseURL.isEmpty { return databaseURL }
        if let fromEnvironment = ProcessInfo.processInfo.environment["DATABASE_URL"], !fromEnvironment.isEmpty {
            return fromEnvironment
        }
        return nil
    }

    /// Connects, starting the embedded cluster when no URL is given. With `requireCurrentSchema`
    /// the schema must be current: the embedded cluster is migrated on the spot, a given server
    /// must have been migrated with `voicemeter migrate`.
    func connect(requireCurrentSchema: Bool = true) throws -> PostgresConnection {
        let migrations = try MigrationSet.load(directory: try MigrationSet.locateDirectory())
        guard let url = explicitURL else {
            let binaries = try PostgresBinaries.locate()
            let directory = EmbeddedPostgres.defaultDataDirectory(majorVersion: binaries.majorVersion)
            let cluster = try EmbeddedPostgres(.init(dataDirectory: directory), binaries: binaries)
            let options = try cluster.start()
            printNotice("Using the embedded PostgreSQL \(binaries.majorVersion) with its data in \(directory) (set DATABASE_URL to use another server).")
            let connection = try PostgresConnection(options)
            if requireCurrentSchema {
                let applied = try Migrator(connection: connection, migrations: migrations).migrate()
                if !applied.isEmpty { printNotice("Applied migrations: \(applied.map(\.fileName).joined(separator: ", ")).") }
            }
            return connection
        }
        let connection = try PostgresConnection(PostgresConnectionOptions(connectionString: url))
        if requireCurrentSchema {
            let status = try Migrator(connection: connection, migrations: migrations).status()
            guard status.isCurrent else {
                throw CommandFailure("the database at \(connection.options) has \(status.pending.count) pending migration(s); run `voicemeter migrate` first")
            }
        }
        return connection
    }
}

/// Progress and context for people go to standard error, so standard output stays parseable.
func printNotice(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// A failure at run time (not a usage mistake): printed as `Error: …` without the usage text, exit 1.
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
