import Foundation

/// The installed PostgreSQL server programs. Debian keeps them in `/usr/lib/postgresql/N/bin`,
/// off `PATH`; `VOICEMETER_PG_BIN` names another directory.
public struct PostgresBinaries: Sendable {
    public var directory: String
    /// The major version, e.g. `15`, from the directory name or `pg_ctl --version`.
    public var majorVersion: String

    public var initdb: String { directory + "/initdb" }
    public var pgCtl: String { directory + "/pg_ctl" }

    /// Finds the newest installed server, or explains how to install one.
    public static func locate() throws(EmbeddedPostgresError) -> PostgresBinaries {
        let fileManager = FileManager.default
        if let configured = ProcessInfo.processInfo.environment["VOICEMETER_PG_BIN"], !configured.isEmpty {
            guard fileManager.isExecutableFile(atPath: configured + "/pg_ctl") else {
                throw EmbeddedPostgresError(message: "VOICEMETER_PG_BIN=\(configured) has no pg_ctl", output: "")
            }
            return PostgresBinaries(directory: configured, majorVersion: version(ofPgCtlIn: configured))
        }
        let root = "/usr/lib/postgresql"
        let versions = ((try? fileManager.contentsOfDirectory(atPath: root)) ?? [])
            .compactMap { name in Int(name).map { (number: $0, name: name) } }
            .filter { fileManager.isExecutableFile(atPath: "\(root)/\($0.name)/bin/initdb") }
            .sorted { $0.number > $1.number }
        if let newest = versions.first {
            return PostgresBinaries(directory: "\(root)/\(newest.name)/bin", majorVersion: newest.name)
        }
        if let pgCtl = ProcessRunner.find("pg_ctl") {
            let directory = (pgCtl as NSString).deletingLastPathComponent
            return PostgresBinaries(directory: directory, majorVersion: version(ofPgCtlIn: directory))
        }
        throw EmbeddedPostgresError(
            message: "no PostgreSQL server is installed for the embedded database",
            output: "Install one (apt-get install postgresql) or point DATABASE_URL at an existing server."
        )
    }

    private static func version(ofPgCtlIn directory: String) -> String {
        let output = (try? ProcessRunner.run(directory + "/pg_ctl", ["--version"]).output) ?? ""
        // "pg_ctl (PostgreSQL) 15.18" -> "15"
        let number = output.split(separator: " ").last.map(String.init) ?? ""
        return number.split(separator: ".").first.map(String.init) ?? "unknown"
    }
}
