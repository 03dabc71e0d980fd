import ArgumentParser
import VoiceMeterStore

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply the numbered SQL files in Migrations/ that the database has not seen.",
        discussion: """
            Each migration runs once, in its own transaction, and is recorded with its checksum in \
            schema_migrations. A migration edited after it was applied is refused: put the change in a \
            new file instead. Safe to run repeatedly and from several servers at once.
            """
    )

    @OptionGroup var database: DatabaseOptions

    @Flag(help: "Only report applied and pending migrations; change nothing.")
    var status = false

    func run() throws {
        let connection = try database.connect(requireCurrentSchema: false)
        let migrator = Migrator(connection: connection, migrations: try MigrationSet.bundled())
        if status {
            let current = try migrator.status()
            print("applied: \(current.applied.map(String.init).joined(separator: ", "))")
            print("pending: \(current.pending.isEmpty ? "none" : current.pending.map(String.init).joined(separator: ", "))")
            return
        }
        let applied = try migrator.migrate()
        if applied.isEmpty {
            print("The schema is current; nothing to apply.")
        } else {
            for migration in applied { print("applied \(migration.fileName)") }
        }
    }
}
