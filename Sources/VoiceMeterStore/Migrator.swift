import PostgresClient

/// Applies migrations in order, each once, each in its own transaction, and records them in
/// `schema_migrations` with their checksum.
///
/// A session advisory lock serializes concurrent migrators (two servers starting at once).
public struct Migrator {
    /// The advisory lock key ("vmmigr" in ASCII).
    static let advisoryLockKey: Int64 = 0x766d_6d69_6772
    private let connection: PostgresConnection
    private let set: MigrationSet

    public init(connection: PostgresConnection, migrations: MigrationSet) {
        self.connection = connection
        self.set = migrations
    }

    /// Where the database stands relative to this build's migrations.
    public struct Status: Equatable, Sendable {
        public var applied: [Int]
        public var pending: [Int]
        /// Nothing pending and nothing unknown: the schema is what this build expects.
        public var isCurrent: Bool { pending.isEmpty }
    }

    /// Applies every pending migration and returns the versions applied now (empty when current).
    @discardableResult
    public func migrate() throws -> [Migration] {
        // Lock first: even creating the history table races with another migrator.
        try connection.query("SELECT pg_advisory_lock($1)", [Self.advisoryLockKey])
        defer { _ = try? connection.query("SELECT pg_advisory_unlock($1)", [Self.advisoryLockKey]) }
        try ensureHistoryTable()

        let pending = try pendingMigrations()
        for migration in pending {
            try connection.transaction { connection in
                do {
                    try connection.runScript(migration.sql)
                } catch let error as PostgresError {
                    throw MigrationError("\(migration.fileName) failed and was rolled back: \(error)")
                }
                try connection.query(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    [migration.version, migration.name, migration.checksum]
                )
            }
        }
        return pending
    }

    /// Checks the history against this build without changing anything.
    public func status() throws -> Status {
        let hasHistory = try connection.query("SELECT to_regclass('schema_migrations') IS NOT NULL AS present").single()
            .decode("present", as: Bool.self)
        guard hasHistory else { return Status(applied: [], pending: set.migrations.map(\.version)) }
        let pending = try pendingMigrations()
        let applied = try appliedChecksums().keys.sorted()
        return Status(applied: applied, pending: pending.map(\.version))
    }

    private func ensureHistoryTable() throws {
        try connection.runScript("""
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """)
    }

    private func appliedChecksums() throws -> [Int: (name: String, checksum: String)] {
        var applied: [Int: (name: String, checksum: String)] = [:]
        for row in try connection.query("SELECT version, name, checksum FROM schema_migrations") {
            applied[try row.decode("version")] = (try row.decode("name"), try row.decode("checksum"))
        }
        return applied
    }

    /// The migrations not yet applied, after verifying that applied ones are unchanged and known.
    private func pendingMigrations() throws -> [Migration] {
        let applied = try appliedChecksums()
        let known = Dictionary(uniqueKeysWithValues: set.migrations.map { ($0.version, $0) })
        for (version, record) in applied.sorted(by: { $0.key < $1.key }) {
            guard let migration = known[version] else {
                throw MigrationError(
                    "the database has migration \(version) (\(record.name)) that this build does not ship; run a voicemeter at least as new as the one that applied it"
                )
            }
            guard migration.checksum == record.checksum else {
                throw MigrationError(
                    "\(migration.fileName) was edited after it was applied (applied checksum \(record.checksum.prefix(12))…, file now \(migration.checksum.prefix(12))…). Applied migrations never change: restore the file and put the change in a new migration numbered after the last one."
                )
            }
        }
        return set.migrations.filter { applied[$0.version] == nil }
    }
}
