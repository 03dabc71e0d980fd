import EmbeddedPostgres
import Foundation
import Synchronization
import PostgresClient
import VoiceMeterStore

/// Real PostgreSQL for tests: the server named by `DATABASE_URL` (CI starts one on loopback), else a
/// private cluster under the system temp directory that is started once and reused across runs.
///
/// Each test gets a database of its own, cloned from a migrated template, so tests run in parallel
/// without seeing each other's rows.
public enum TestPostgres {
    /// The repository's `Migrations/` folder, found from this file's location.
    public static let migrationsDirectory: String = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            let candidate = url.appendingPathComponent("Migrations")
            if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("0001_schema_v1.sql").path) {
                return candidate.path
            }
        }
        preconditionFailure("Migrations/ not found above \(#filePath)")
    }()

    public static func migrations() throws -> MigrationSet {
        try MigrationSet.load(directory: migrationsDirectory)
    }

    /// A new, empty database (no migrations applied).
    public static func emptyDatabase() throws -> PostgresConnectionOptions {
        let server = try shared.get()
        let name = uniqueName()
        try PostgresConnection(server.maintenance).runScript("CREATE DATABASE \(name)")
        return server.options.database(name)
    }

    /// A new database with every migration applied.
    public static func migratedDatabase() throws -> PostgresConnectionOptions {
        let server = try shared.get()
        let name = uniqueName()
        try PostgresConnection(server.maintenance).runScript("CREATE DATABASE \(name) TEMPLATE \(server.template)")
        return server.options.database(name)
    }

    /// A throwaway cluster of the test's own, for tests that stop, crash or restart the server.
    public static func privateCluster() throws -> EmbeddedPostgres {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("voicemeter-cluster-\(UUID().uuidString.prefix(8))").path
        return try EmbeddedPostgres(.init(dataDirectory: directory + "/data"))
    }

    // MARK: Shared server

    private struct Server: Sendable {
        var options: PostgresConnectionOptions
        var maintenance: PostgresConnectionOptions
        var template: String
    }

    private static let runPrefix = "vmtest_\(getpid())_"
    private static let counter = Counter()

    private static func uniqueName() -> String { runPrefix + String(counter.next()) }

    private static let shared: Result<Server, any Error> = Result {
        let options: PostgresConnectionOptions
        if let url = ProcessInfo.processInfo.environment["DATABASE_URL"], !url.isEmpty {
            options = PostgresConnectionOptions(connectionString: url)
        } else {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("voicemeter-test-cluster").path
            options = try EmbeddedPostgres(.init(dataDirectory: directory)).start()
        }
        let maintenance = options.database("postgres")
        let admin = try PostgresConnection(maintenance)
        // Databases left by earlier runs of the suite.
        for row in try admin.query("SELECT datname FROM pg_database WHERE datname LIKE 'vmtest\\_%' AND datname NOT LIKE $1", [runPrefix + "%"]) {
            let name: String = try row.decode("datname")
            try? admin.runScript("DROP DATABASE IF EXISTS \(try admin.quoteIdentifier(name)) WITH (FORCE)")
        }
        let template = runPrefix + "template"
        try admin.runScript("CREATE DATABASE \(template)")
        do {
            let connection = try PostgresConnection(options.database(template))
            try Migrator(connection: connection, migrations: try migrations()).migrate()
        }
        return Server(options: options, maintenance: maintenance, template: template)
    }
}

/// A thread-safe increasing counter.
private final class Counter: Sendable {
    private let value = Mutex(0)
    func next() -> Int { value.withLock { $0 += 1; return $0 } }
}
