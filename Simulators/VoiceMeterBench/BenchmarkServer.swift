import ArgumentParser
import Foundation
import Logging
import PostgresClient
import VoiceMeterDomain
import VoiceMeterServer
import VoiceMeterStore
import WebSocketTransport

/// A metering server in a child process (this executable's hidden `serve-child` command), so its
/// CPU time and memory can be measured apart from the load generator.
final class BenchmarkServer {
    let process = Process()
    let port: Int
    var pid: Int32 { process.processIdentifier }

    /// - Parameter messagesPerSecond: the per-connection rate limit (a load generator multiplexes
    ///   many calls on one connection; production keeps the default).
    init(database: PostgresConnectionOptions, connections: Int, messagesPerSecond: Int? = nil, flushMilliseconds: Int? = nil) throws {
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["serve-child", "--connections", String(connections)]
            + (messagesPerSecond.map { ["--messages-per-second", String($0)] } ?? [])
            + (flushMilliseconds.map { ["--flush-ms", String($0)] } ?? [])
        // In the environment, not the arguments: `ps` shows arguments, and conninfo may hold a password.
        process.environment = ProcessInfo.processInfo.environment.merging([ServeChild.databaseVariable: database.conninfo]) { $1 }
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        var line = ""
        while !line.hasSuffix("\n") {
            let byte = output.fileHandleForReading.readData(ofLength: 1)
            guard !byte.isEmpty else { throw ValidationError("the benchmark server exited before it listened") }
            line += String(decoding: byte, as: UTF8.self)
        }
        guard line.hasPrefix("PORT "), let port = Int(line.dropFirst(5).dropLast()) else {
            throw ValidationError("the benchmark server said '\(line)' instead of its port")
        }
        self.port = port
    }

    /// Stops it as an operator would (SIGTERM: commit, acknowledge, close).
    func stop() {
        process.terminate()
        process.waitUntilExit()
    }

    var residentBytes: (now: Int, peak: Int)? { ProcessStats.residentBytes(pid: pid) }
}

/// The child side: starts a server with benchmark limits, prints `PORT n`, stops on SIGTERM.
struct ServeChild: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve-child", abstract: "(internal) the server of a benchmark run.",
                                                    shouldDisplay: false)

    static let databaseVariable = "VOICEMETER_BENCH_DATABASE"

    @Option var connections: Int
    @Option var messagesPerSecond: Int?
    @Option(name: .customLong("flush-ms")) var flushMilliseconds: Int?

    func run() async throws {
        setOpenFileLimit(forConnections: connections)
        guard let database = ProcessInfo.processInfo.environment[Self.databaseVariable] else {
            throw ValidationError("serve-child is started by the benchmarks, which pass the database in \(Self.databaseVariable)")
        }
        var configuration = ServerConfiguration.loopback(database: PostgresConnectionOptions(connectionString: database), connections: connections)
        configuration.listener.limits.connectionsMax = connections + 64
        if let messagesPerSecond {
            configuration.allowMessages(perSecond: messagesPerSecond, burst: messagesPerSecond * 2)
        }
        if let flushMilliseconds { configuration.writerFlushIntervalMilliseconds = flushMilliseconds }
        // Load, not budgets, is measured: calls stream far longer than a real call.
        configuration.defaultBudget = BudgetPolicy(callLimit: ExactDecimal(1_000_000), dayLimit: nil, monthLimit: ExactDecimal(1_000_000_000))
        let server = try await VoiceMeterServer.start(configuration: configuration, migrations: try MigrationSet.bundled(),
                                                      logger: Logger(label: "bench-server") { _ in SwiftLogNoOpLogHandler() }, stopsOnSignals: true)
        FileHandle.standardOutput.write(Data("PORT \(server.port)\n".utf8))
        try await server.stopped()
    }
}
