import ArgumentParser
import Foundation
import PostgresClient
import VoiceMeterDatabase
import VoiceMeterServer

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
    var explicitURL: String? { DatabaseSelection.url(flag: databaseURL) }

    /// Connects, starting the embedded cluster when no URL is given (`DatabaseSelection`).
    func connect(requireCurrentSchema: Bool = true) throws -> PostgresConnection {
        do {
            return try DatabaseSelection.connect(url: explicitURL, requireCurrentSchema: requireCurrentSchema, notice: printNotice)
        } catch let pending as DatabaseSelection.PendingMigrations {
            throw CommandFailure(pending.description)
        }
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
