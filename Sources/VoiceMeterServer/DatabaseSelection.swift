import EmbeddedPostgres
import PostgresClient
import VoiceMeterStore

/// The one rule for which database a command uses: the URL given, else the embedded cluster.
public enum DatabaseSelection {
    /// The schema of a given server is behind this build.
    public struct PendingMigrations: Error, CustomStringConvertible {
        public var description: String
    }

    /// Connects to `url`, or starts the embedded cluster when it is `nil`. With
    /// `requireCurrentSchema` the schema must be current: the embedded cluster is migrated on the
    /// spot, a given server must have been migrated with `voicemeter migrate`.
    /// - Parameter notice: receives lines for people (where the data lives, migrations applied).
    public static func connect(url: String?, requireCurrentSchema: Bool = true, notice: (String) -> Void) throws -> PostgresConnection {
        let migrations = try MigrationSet.load(directory: try MigrationSet.locateDirectory())
        guard let url else {
            let binaries = try PostgresBinaries.locate()
            let directory = EmbeddedPostgres.defaultDataDirectory(majorVersion: binaries.majorVersion)
            let options = try EmbeddedPostgres(.init(dataDirectory: directory), binaries: binaries).start()
            notice("Using the embedded PostgreSQL \(binaries.majorVersion) with its data in \(directory) (set DATABASE_URL to use another server).")
            let connection = try PostgresConnection(options)
            if requireCurrentSchema {
                let applied = try Migrator(connection: connection, migrations: migrations).migrate()
                if !applied.isEmpty { notice("Applied migrations: \(applied.map(\.fileName).joined(separator: ", ")).") }
            }
            return connection
        }
        let connection = try PostgresConnection(PostgresConnectionOptions(connectionString: url))
        if requireCurrentSchema {
            let status = try Migrator(connection: connection, migrations: migrations).status()
            guard status.isCurrent else {
                throw PendingMigrations(description: "the database at \(connection.options) has \(status.pending.count) pending migration(s); run `voicemeter migrate` first")
            }
        }
        return connection
    }
}
