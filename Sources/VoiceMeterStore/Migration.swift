import Foundation
import VoiceMeterCrypto

/// One numbered SQL file from `Migrations/`, e.g. `0001_schema_v1.sql`.
public struct Migration: Sendable, Equatable {
    public var version: Int
    public var name: String
    public var sql: String
    /// SHA-256 of the file's bytes; an applied migration whose file changes is refused.
    public var checksum: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
        self.checksum = SHA256.hexDigest(Array(sql.utf8))
    }

    /// The file name this migration was read from.
    public var fileName: String { String(format: "%04d_%@.sql", version, name) }
}

/// Problems with the migration files or with the database's migration history.
public struct MigrationError: Error, CustomStringConvertible, Equatable {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// The ordered set of migrations shipped with this build.
public struct MigrationSet: Sendable {
    public let migrations: [Migration]

    public init(_ migrations: [Migration]) throws(MigrationError) {
        let sorted = migrations.sorted { $0.version < $1.version }
        for (previous, next) in zip(sorted, sorted.dropFirst()) where previous.version == next.version {
            throw MigrationError("two migrations share version \(next.version): \(previous.fileName) and \(next.fileName); renumber one")
        }
        self.migrations = sorted
    }

    /// Reads every `NNNN_name.sql` file of `directory`; other files are ignored, misnamed `.sql` files refused.
    public static func load(directory: String) throws -> MigrationSet {
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".sql") }
        var migrations: [Migration] = []
        for file in files {
            guard let (version, name) = parse(fileName: file) else {
                throw MigrationError("\(directory)/\(file) is not named NNNN_name.sql (four digits, an underscore, lowercase letters, digits and underscores)")
            }
            let sql = try String(contentsOfFile: directory + "/" + file, encoding: .utf8)
            migrations.append(Migration(version: version, name: name, sql: sql))
        }
        guard !migrations.isEmpty else { throw MigrationError("no migrations (NNNN_name.sql) in \(directory)") }
        return try MigrationSet(migrations)
    }

    /// The migrations this build ships with (`locateDirectory()`).
    public static func bundled() throws -> MigrationSet {
        try load(directory: try locateDirectory())
    }

    static func parse(fileName: String) -> (Int, String)? {
        let stem = fileName.dropLast(".sql".count)
        let parts = stem.split(separator: "_", maxSplits: 1)
        guard parts.count == 2, parts[0].count == 4, let version = Int(parts[0]), version > 0 else { return nil }
        let name = parts[1]
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789_")
        guard !name.isEmpty, name.allSatisfy(allowed.contains) else { return nil }
        return (version, String(name))
    }

    /// The directory this build's migrations are read from: `$VOICEMETER_MIGRATIONS_DIR`, else
    /// `../share/voicemeter/migrations` beside the executable (installed), else a `Migrations/`
    /// folder above the executable (a source checkout), else `./Migrations`.
    public static func locateDirectory() throws -> String {
        let fileManager = FileManager.default
        if let configured = ProcessInfo.processInfo.environment["VOICEMETER_MIGRATIONS_DIR"], !configured.isEmpty {
            return configured
        }
        let executable = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath()
        var candidates = [executable.deletingLastPathComponent().appendingPathComponent("../share/voicemeter/migrations").standardized.path]
        var directory = executable.deletingLastPathComponent()
        while directory.path != "/" {
            candidates.append(directory.appendingPathComponent("Migrations").path)
            directory = directory.deletingLastPathComponent()
        }
        candidates.append(fileManager.currentDirectoryPath + "/Migrations")
        if let found = candidates.first(where: { fileManager.fileExists(atPath: $0 + "/0001_schema_v1.sql") }) {
            return found
        }
        throw MigrationError("cannot find the Migrations directory; set VOICEMETER_MIGRATIONS_DIR to the folder holding 0001_schema_v1.sql")
    }
}
