import Foundation
import PostgresClient

/// A private PostgreSQL cluster run with the installed server's `initdb` and `pg_ctl`.
///
/// It is the default database when no `DATABASE_URL` is given, and the throwaway server of tests
/// that stop and restart PostgreSQL. `start()` initializes the data directory on first use, starts
/// the server or reuses a running one, and creates the database; the server keeps running after
/// the process exits so the next command reuses it. PostgreSQL refuses to run as root: when root
/// starts it, the cluster belongs to the unprivileged `postgres` account.
public struct EmbeddedPostgres: Sendable {
    public struct Configuration: Sendable {
        /// Where the cluster's files live; created on first start.
        public var dataDirectory: String
        /// The port number; with no TCP listener it only names the Unix socket.
        public var port: Int = 5432
        /// A loopback address to listen on besides the Unix socket, or `nil` for the socket only.
        public var tcpListenAddress: String?
        /// The superuser `initdb` creates, who owns the database.
        public var user = "voicemeter"
        public var database = "voicemeter"
        /// Extra `postgresql.conf` lines written at initialization.
        public var extraSettings: [String] = []

        public init(dataDirectory: String) {
            self.dataDirectory = dataDirectory
        }
    }

    public let configuration: Configuration
    public let binaries: PostgresBinaries

    public init(_ configuration: Configuration, binaries: PostgresBinaries? = nil) throws(EmbeddedPostgresError) {
        self.configuration = configuration
        if let binaries { self.binaries = binaries } else { self.binaries = try PostgresBinaries.locate() }
    }

    /// The per-user default data directory: `$VOICEMETER_DATA_DIR`, else
    /// `/var/lib/voicemeter/postgres-N` for root, else `$XDG_DATA_HOME/voicemeter/postgres-N`
    /// (`~/.local/share/voicemeter/postgres-N`).
    public static func defaultDataDirectory(majorVersion: String) -> String {
        let environment = ProcessInfo.processInfo.environment
        if let configured = environment["VOICEMETER_DATA_DIR"], !configured.isEmpty { return configured }
        let leaf = "voicemeter/postgres-\(majorVersion)"
        if geteuid() == 0 { return "/var/lib/\(leaf)" }
        let dataHome = environment["XDG_DATA_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? NSHomeDirectory() + "/.local/share"
        return "\(dataHome)/\(leaf)"
    }

    /// How clients reach this cluster.
    public var connectionOptions: PostgresConnectionOptions {
        PostgresConnectionOptions(connectionString: "", overrides: [
            ("host", configuration.dataDirectory),
            ("port", String(configuration.port)),
            ("user", configuration.user),
            ("dbname", configuration.database),
        ])
    }

    /// Initializes (first time), starts or reuses the server and makes sure the database exists.
    public func start() throws -> PostgresConnectionOptions {
        let lock = try DirectoryLock(path: configuration.dataDirectory + ".lock")
        defer { lock.release() }
        if !FileManager.default.fileExists(atPath: configuration.dataDirectory + "/PG_VERSION") {
            try initialize()
        }
        if try !isRunning() {
            try runAsOwner(binaries.pgCtl, [
                "start", "-w", "-t", "60", "-D", configuration.dataDirectory,
                "-l", configuration.dataDirectory + "/server.log",
            ], failure: "could not start PostgreSQL (see \(configuration.dataDirectory)/server.log)")
        }
        try createDatabaseIfMissing()
        return connectionOptions
    }

    /// Whether a server is running on this data directory.
    public func isRunning() throws -> Bool {
        guard FileManager.default.fileExists(atPath: configuration.dataDirectory + "/PG_VERSION") else { return false }
        let status = try ProcessRunner.run(Self.launcher, ownerArguments(binaries.pgCtl, ["status", "-D", configuration.dataDirectory]))
        return status.exitCode == 0
    }

    /// Stops the server: `immediately` is a crash-like stop (`-m immediate`, recovery on next start),
    /// otherwise a fast, clean shutdown.
    public func stop(immediately: Bool = false) throws {
        guard try isRunning() else { return }
        try runAsOwner(binaries.pgCtl, [
            "stop", "-w", "-t", "60", "-D", configuration.dataDirectory, "-m", immediately ? "immediate" : "fast",
        ], failure: "could not stop PostgreSQL")
    }

    /// Stops the server if it runs and deletes the data directory (throwaway clusters only).
    public func destroy() throws {
        try stop(immediately: true)
        try? FileManager.default.removeItem(atPath: configuration.dataDirectory)
        try? FileManager.default.removeItem(atPath: configuration.dataDirectory + ".lock")
    }

    // MARK: Steps

    private func initialize() throws {
        let directory = configuration.dataDirectory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try handOverToOwner(directory)
        try runAsOwner(binaries.initdb, [
            "-D", directory, "-U", configuration.user, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-instructions",
        ], failure: "initdb failed in \(directory)")
        // Only the Unix socket inside the data directory (owner-only) unless a loopback address is asked for.
        var settings = [
            "",
            "# Written by voicemeter for its private cluster.",
            "listen_addresses = '\(configuration.tcpListenAddress ?? "")'",
            "unix_socket_directories = '\(directory)'",
            "port = \(configuration.port)",
        ]
        settings += configuration.extraSettings
        let configFile = directory + "/postgresql.conf"
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: configFile))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: Data((settings.joined(separator: "\n") + "\n").utf8))
    }

    private func createDatabaseIfMissing() throws {
        var maintenance = connectionOptions
        maintenance.overrides.append(("dbname", "postgres"))
        let connection = try PostgresConnection(maintenance)
        let existing = try connection.query("SELECT 1 FROM pg_database WHERE datname = $1", [configuration.database])
        if existing.isEmpty {
            try connection.runScript("CREATE DATABASE \(try connection.quoteIdentifier(configuration.database))")
        }
    }

    // MARK: Running as the cluster's owner

    /// PostgreSQL will not run as root; root runs the server binaries as this account instead.
    static let unprivilegedAccount = "postgres"
    private static var runsAsRoot: Bool { geteuid() == 0 }
    private static var launcher: String { runsAsRoot ? (ProcessRunner.find("runuser") ?? "/usr/sbin/runuser") : "/usr/bin/env" }

    private func ownerArguments(_ executable: String, _ arguments: [String]) -> [String] {
        Self.runsAsRoot ? ["-u", Self.unprivilegedAccount, "--", executable] + arguments : [executable] + arguments
    }

    private func runAsOwner(_ executable: String, _ arguments: [String], failure: String) throws {
        let result = try ProcessRunner.run(Self.launcher, ownerArguments(executable, arguments))
        guard result.exitCode == 0 else {
            throw EmbeddedPostgresError(message: failure, output: result.output)
        }
    }

    /// As root, gives the data directory to the unprivileged account and makes its parents traversable.
    private func handOverToOwner(_ directory: String) throws {
        guard Self.runsAsRoot else { return }
        guard let account = getpwnam(Self.unprivilegedAccount) else {
            throw EmbeddedPostgresError(
                message: "PostgreSQL refuses to run as root and there is no '\(Self.unprivilegedAccount)' account to run it as",
                output: "Install the server (apt-get install postgresql), which creates that account, or set DATABASE_URL."
            )
        }
        guard chown(directory, account.pointee.pw_uid, account.pointee.pw_gid) == 0, chmod(directory, 0o700) == 0 else {
            throw EmbeddedPostgresError(message: "could not give \(directory) to '\(Self.unprivilegedAccount)' (errno \(errno))", output: "")
        }
        var parent = (directory as NSString).deletingLastPathComponent
        while parent != "/" && !parent.isEmpty {
            var info = stat()
            if stat(parent, &info) == 0, info.st_mode & 0o001 == 0 {
                _ = chmod(parent, (info.st_mode & 0o7777) | 0o711)
            }
            parent = (parent as NSString).deletingLastPathComponent
        }
    }
}

/// Why the private cluster could not be prepared, with what the server tools printed.
public struct EmbeddedPostgresError: Error, CustomStringConvertible {
    public var message: String
    public var output: String
    public var description: String {
        output.isEmpty ? message : "\(message)\n\(output.trimmingCharacters(in: .whitespacesAndNewlines))"
    }
}

/// An exclusive lock on a file, so two processes never initialize or start the same cluster at once.
private struct DirectoryLock {
    private let descriptor: Int32

    init(path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        descriptor = open(path, O_CREAT | O_RDWR, 0o600)
        guard descriptor >= 0 else {
            throw EmbeddedPostgresError(message: "cannot open lock file \(path) (errno \(errno))", output: "")
        }
        guard flock(descriptor, LOCK_EX) == 0 else {
            close(descriptor)
            throw EmbeddedPostgresError(message: "cannot lock \(path) (errno \(errno))", output: "")
        }
    }

    func release() {
        flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}
