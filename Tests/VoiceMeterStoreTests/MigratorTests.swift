import Foundation
import PostgresClient
import Testing
import VoiceMeterStore
import VoiceMeterTestSupport

@Suite("Migrations against a real server")
struct MigratorTests {
    @Test("every migration applies once; running again applies nothing")
    func appliesOnceAndIsIdempotent() throws {
        let connection = try PostgresConnection(try TestPostgres.emptyDatabase())
        let migrations = try TestPostgres.migrations()
        let migrator = Migrator(connection: connection, migrations: migrations)

        #expect(try migrator.status().pending == migrations.migrations.map(\.version))
        let first = try migrator.migrate()
        #expect(first.map(\.version) == migrations.migrations.map(\.version))
        #expect(try migrator.migrate().isEmpty)
        #expect(try migrator.status().isCurrent)
        let recorded = try connection.query("SELECT version, checksum FROM schema_migrations ORDER BY version")
        #expect(try recorded.map { try $0.decode("checksum", as: String.self) } == migrations.migrations.map(\.checksum))
    }

    @Test("an applied migration whose file was edited is refused with what to do instead")
    func editedMigrationIsRefused() throws {
        let connection = try PostgresConnection(try TestPostgres.migratedDatabase())
        var edited = try TestPostgres.migrations().migrations
        edited[0] = Migration(version: edited[0].version, name: edited[0].name, sql: edited[0].sql + "\n-- a quiet edit\n")
        let migrator = Migrator(connection: connection, migrations: try MigrationSet(edited))

        let error = #expect(throws: MigrationError.self) { try migrator.migrate() }
        #expect(error?.description.contains("0001_schema_v1.sql was edited after it was applied") == true)
        #expect(error?.description.contains("new migration") == true)
    }

    @Test("a database migrated by a newer build is refused by an older one")
    func unknownAppliedMigrationIsRefused() throws {
        let connection = try PostgresConnection(try TestPostgres.migratedDatabase())
        let all = try TestPostgres.migrations().migrations
        let older = Migrator(connection: connection, migrations: try MigrationSet(Array(all.dropLast())))
        let error = #expect(throws: MigrationError.self) { try older.migrate() }
        #expect(error?.description.contains("does not ship") == true)
    }

    @Test("a failing migration is rolled back and not recorded")
    func failingMigrationRollsBack() throws {
        let connection = try PostgresConnection(try TestPostgres.migratedDatabase())
        let broken = Migration(version: 9000, name: "broken", sql: "CREATE TABLE half_done (id int); SELECT no_such_function();")
        let migrator = Migrator(connection: connection, migrations: try MigrationSet(try TestPostgres.migrations().migrations + [broken]))
        let error = #expect(throws: MigrationError.self) { try migrator.migrate() }
        #expect(error?.description.contains("9000_broken.sql failed and was rolled back") == true)
        #expect(try connection.query("SELECT to_regclass('half_done') IS NULL AS gone").single().decode("gone", as: Bool.self))
        #expect(try migrator.status().pending == [9000])
    }

    @Test("two migrators racing on one database apply each migration exactly once")
    func concurrentMigrators() async throws {
        let options = try TestPostgres.emptyDatabase()
        let migrations = try TestPostgres.migrations()
        let applied = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<2 {
                group.addTask {
                    let connection = try PostgresConnection(options)
                    return try Migrator(connection: connection, migrations: migrations).migrate().count
                }
            }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(applied.sorted() == [0, migrations.migrations.count])
    }
}

@Suite("Migration files")
struct MigrationFileTests {
    private func directory(with files: [String: String]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("migrations-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        for (name, sql) in files { try sql.write(toFile: path + "/" + name, atomically: true, encoding: .utf8) }
        return path
    }

    @Test("files load in numeric order and other files are ignored")
    func loadsInOrder() throws {
        let path = try directory(with: ["0010_later.sql": "SELECT 10;", "0002_early.sql": "SELECT 2;", "README.md": "notes"])
        let set = try MigrationSet.load(directory: path)
        #expect(set.migrations.map(\.fileName) == ["0002_early.sql", "0010_later.sql"])
    }

    @Test("a misnamed SQL file is refused with the expected pattern")
    func misnamedFile() throws {
        let path = try directory(with: ["1_missing_padding.sql": "SELECT 1;"])
        let error = #expect(throws: MigrationError.self) { try MigrationSet.load(directory: path) }
        #expect(error?.description.contains("NNNN_name.sql") == true)
    }

    @Test("two files with one version number are refused")
    func duplicateVersions() throws {
        let path = try directory(with: ["0003_a.sql": "SELECT 1;", "0003_b.sql": "SELECT 2;"])
        let error = #expect(throws: MigrationError.self) { try MigrationSet.load(directory: path) }
        #expect(error?.description.contains("share version 3") == true)
    }
}
