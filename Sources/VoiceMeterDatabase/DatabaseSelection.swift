import EmbeddedPostgres
import Foundation
import PostgresClient
import VoiceMeterStore

/// The one rule for which database a command uses: the URL given, else the embedded cluster.
public enum DatabaseSelection {
    /// The schema of a given server is behind this build.
    public struct PendingMigrations: Error, CustomStringConvertible {
        public var description: String
    }

    /// The database named by `flag`, else by a non-empty `DATABASE_URL`; `nil` means the embedded cluster.
    public static func url(flag: String?) -> String? {
        if let flag, !flag.isEmpty { return flag }
        if let fromEnvironment = ProcessInfo.processInfo.environment["DATABASE_URL"], !fromEnvironment.isEmpty { return fromEnvironment }
        return nil
    }

    /// This machine's embedded cluster (not started): the installed PostgreSQL's binaries and the
    /// default data directory for its major version.
    public static func embeddedCluster() throws -> EmbeddedPostgres {
        let binaries = try PostgresBinaries.locate()
        let directory = EmbeddedPostgres.defaultDataDirectory(majorVersion: binaries.majorVersion)
        return try EmbeddedPostgres(.init(dataDirectory: directory), binaries: binaries)
    }

    /// Connects to `url`, or starts the embedded cluster when it is `nil`. With
    /// `requireCurrentSchema` the schema must be current: the embedded cluster is migrated on the
    /// spot, a given server must have been migrated with `voicemeter migrate`.
    /// - Parameter notice: receives lines for people (where the data lives, migrations applied).
    public static func connect(url: String?, requireCurrentSchema: Bool = true, notice: (String) -> Void) throws -> PostgresConnection {
        guard let url else {
            let cluster = try embeddedCluster()
            let connection = try PostgresConnection(try cluster.start())
            notice("Using the embedded PostgreSQL \(cluster.binaries.majorVersion) with its data in \(cluster.configuration.dataDirectory) (set DATABASE_URL to use another server).")
            if requireCurrentSchema {
                let applied = try Migrator(connection: connection, migrations: try MigrationSet.bundled()).migrate()
                if !applied.isEmpty { notice("Applied migrations: \(applied.map(\.fileName).joined(separator: ", ")).") }
            }
            return connection
        }
        let connection = try PostgresConnection(PostgresConnectionOptions(connectionString: url))
        if requireCurrentSchema {
            let status = try Migrator(connection: connection, migrations: try MigrationSet.bundled()).status()
            guard status.isCurrent else {
                throw PendingMigrations(description: "the database at \(connection.options) has \(status.pending.count) pending migration(s); run `voicemeter migrate` first")
            }
        }
        return connection
    }
}
