import ArgumentParser
import Dispatch
import Foundation
import Logging
import PostgresClient
import VoiceMeterDatabase
import VoiceMeterServer
import VoiceMeterStore
import WebSocketTransport

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the metering server: WebSocket ingress at /v1/stream, /healthz, /readyz and /metrics.",
        discussion: """
            Voice pipelines connect with Authorization: Bearer <ingest token> (voicemeter tokens create NAME) \
            and stream usage frames (protocol v1, docs/protocol.md). SIGTERM or SIGINT stops it gracefully: \
            in-flight frames are committed and acknowledged, connections closed with 1001.

            Every setting comes from, first to last: its flag, its environment variable, the configuration \
            file (--config or VOICEMETER_CONFIG: key = value lines with the flags' names), the default. \
            --print-config shows the effective values and their sources, secrets redacted:

            \(ServerSettings.all.map { "  \($0.key.padding(toLength: 26, withPad: " ", startingAt: 0))\($0.environment.padding(toLength: 36, withPad: " ", startingAt: 0))\($0.defaultValue ?? "(unset)")" }.joined(separator: "\n"))

            Examples:
              voicemeter serve
              voicemeter serve --listen 0.0.0.0:8787 --tls-cert server.pem --tls-key server.key
              VOICEMETER_LOG_FORMAT=json voicemeter serve --config /etc/voicemeter/voicemeter.conf
              voicemeter serve --config voicemeter.conf --print-config
            """
    )

    @Option(help: ArgumentHelp("Configuration file of key = value lines (default: $VOICEMETER_CONFIG).", valueName: "file"))
    var config: String?
    @Flag(name: .customLong("print-config"), help: "Print the effective settings with their sources (secrets redacted) and exit.")
    var printConfig = false

    @Option(name: .customLong("database-url"), help: ArgumentHelp("PostgreSQL URI or conninfo (DATABASE_URL).", valueName: "url")) var databaseURL: String?
    @Option(help: ArgumentHelp("Address and port to bind exactly; port 0 picks a free one.", valueName: "host:port")) var listen: String?
    @Option(name: .customLong("tls-cert"), help: ArgumentHelp("PEM certificate chain: serve wss:// (needs --tls-key).", valueName: "file")) var tlsCertificate: String?
    @Option(name: .customLong("tls-key"), help: ArgumentHelp("PEM private key for --tls-cert.", valueName: "file")) var tlsKey: String?
    @Option(name: .customLong("allowed-origin"), help: ArgumentHelp("Accept upgrades only from these Origins (comma-separated).", valueName: "origins"))
    var allowedOrigins: String?
    @Option(name: .customLong("writer-connections"), help: ArgumentHelp("Ledger writers, each with its own connection (1 or 2 suit 2 cores).", valueName: "n"))
    var writerConnections: String?
    @Option(name: .customLong("batch-events"), help: ArgumentHelp("Commit when this many events wait.", valueName: "n")) var batchEvents: String?
    @Option(name: .customLong("flush-ms"), help: ArgumentHelp("Commit when the oldest waiting event is this many milliseconds old.", valueName: "ms"))
    var flushMilliseconds: String?
    @Option(name: .customLong("queue-events"), help: ArgumentHelp("Events a writer queues before answering overloaded.", valueName: "n")) var queueEvents: String?
    @Option(name: .customLong("metering-shards"), help: ArgumentHelp("Metering actors, each on its own queue (default: half the cores; one on 2 cores).", valueName: "n"))
    var meteringShards: String?
    @Option(name: .customLong("budget-tick-seconds"), help: ArgumentHelp("How often committed spend is refreshed and cutoffs re-sent.", valueName: "s"))
    var budgetTickSeconds: String?
    @Option(name: .customLong("budget-grant-seconds"), help: ArgumentHelp("Seconds of a user's burn one budget grant covers.", valueName: "s"))
    var budgetGrantSeconds: String?
    @Option(name: .customLong("budget-grant-lease-seconds"), help: ArgumentHelp("A node that dies holds its budget grants this long (at least twice the tick).", valueName: "s"))
    var budgetGrantLeaseSeconds: String?
    @Option(name: .customLong("rollup-fold-seconds"), help: ArgumentHelp("How often each user's journaled period deltas are folded into cost_summaries (a sweep over the users, a step a second).", valueName: "s"))
    var rollupFoldSeconds: String?
    @Option(name: .customLong("abandon-after-seconds"), help: ArgumentHelp("Close a silent call as abandoned after this long.", valueName: "s"))
    var abandonAfterSeconds: String?
    @Option(name: .customLong("database-connect-timeout-seconds"), help: ArgumentHelp("Give up connecting to the database after this long.", valueName: "s"))
    var databaseConnectTimeoutSeconds: String?
    @Option(name: .customLong("database-statement-timeout-seconds"), help: ArgumentHelp("A statement may run this long (locks wait a third of it).", valueName: "s"))
    var databaseStatementTimeoutSeconds: String?
    @Option(name: .customLong("calls-per-connection-max"), help: ArgumentHelp("Live calls one connection may carry.", valueName: "n"))
    var callsPerConnectionMax: String?
    @Option(name: .customLong("unknown-call-records-per-second"), help: ArgumentHelp("Frames for unknown calls one connection may have recorded in rejected_frames per second.", valueName: "n"))
    var unknownCallRecordsPerSecond: String?
    @Option(name: .customLong("shutdown-drain-seconds"), help: ArgumentHelp("On SIGTERM, wait this long for what was received to be committed (the stop takes at most \(VoiceMeterServer.shutdownSecondsAfterDrain) s more).", valueName: "s"))
    var shutdownDrainSeconds: String?
    @Option(name: .customLong("call-start-past-seconds"), help: ArgumentHelp("A new call's call.start ts may lie this far before the server's clock.", valueName: "s"))
    var callStartPastSeconds: String?
    @Option(name: .customLong("clock-skew-seconds"), help: ArgumentHelp("A ts may lie this far after the server's clock (a frame's this far before its call's start).", valueName: "s"))
    var clockSkewSeconds: String?
    @Option(name: .customLong("default-call-limit"), help: ArgumentHelp("USD per call for users without budget settings.", valueName: "usd")) var defaultCallLimit: String?
    @Option(name: .customLong("default-day-limit"), help: ArgumentHelp("USD per UTC day for users without settings.", valueName: "usd")) var defaultDayLimit: String?
    @Option(name: .customLong("default-month-limit"), help: ArgumentHelp("USD per UTC month for users without settings.", valueName: "usd")) var defaultMonthLimit: String?
    @Option(name: .customLong("idle-timeout-seconds"), help: ArgumentHelp("Ping a silent connection after this long; drop it after as long again.", valueName: "s"))
    var idleTimeoutSeconds: String?
    @Option(name: .customLong("connections-max"), help: ArgumentHelp("Open connections in all.", valueName: "n")) var connectionsMax: String?
    @Option(name: .customLong("connections-per-peer-max"), help: ArgumentHelp("Open connections from one address.", valueName: "n")) var connectionsPerPeerMax: String?
    @Option(name: .customLong("messages-per-second"), help: ArgumentHelp("Sustained client messages per connection.", valueName: "n")) var messagesPerSecond: String?
    @Option(name: .customLong("log-format"), help: ArgumentHelp("text or json.", valueName: "format")) var logFormat: String?
    @Option(name: .customLong("log-level"), help: ArgumentHelp("trace … critical.", valueName: "level")) var logLevel: String?

    private var flags: [String: String] {
        let given: [(String, String?)] = [
            ("database-url", databaseURL), ("listen", listen), ("tls-cert", tlsCertificate), ("tls-key", tlsKey), ("allowed-origin", allowedOrigins),
            ("writer-connections", writerConnections), ("batch-events", batchEvents), ("flush-ms", flushMilliseconds), ("queue-events", queueEvents),
            ("metering-shards", meteringShards), ("budget-tick-seconds", budgetTickSeconds), ("budget-grant-seconds", budgetGrantSeconds),
            ("budget-grant-lease-seconds", budgetGrantLeaseSeconds), ("rollup-fold-seconds", rollupFoldSeconds), ("abandon-after-seconds", abandonAfterSeconds),
            ("database-connect-timeout-seconds", databaseConnectTimeoutSeconds), ("database-statement-timeout-seconds", databaseStatementTimeoutSeconds),
            ("shutdown-drain-seconds", shutdownDrainSeconds), ("calls-per-connection-max", callsPerConnectionMax),
            ("unknown-call-records-per-second", unknownCallRecordsPerSecond), ("call-start-past-seconds", callStartPastSeconds), ("clock-skew-seconds", clockSkewSeconds), ("default-call-limit", defaultCallLimit),
            ("default-day-limit", defaultDayLimit), ("default-month-limit", defaultMonthLimit), ("idle-timeout-seconds", idleTimeoutSeconds),
            ("connections-max", connectionsMax), ("connections-per-peer-max", connectionsPerPeerMax), ("messages-per-second", messagesPerSecond),
            ("log-format", logFormat), ("log-level", logLevel),
        ]
        return Dictionary(uniqueKeysWithValues: given.compactMap { key, value in value.map { (key, $0) } })
    }

    /// The settings, with every value checked: a bad one fails here, naming the setting.
    private func settings() throws -> (ServerSettings, ServerConfiguration) {
        let environment = ProcessInfo.processInfo.environment
        let file = try (config ?? environment["VOICEMETER_CONFIG"].flatMap { $0.isEmpty ? nil : $0 }).map { path in
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ValidationError("cannot read the configuration file \(path); check the path (--config or VOICEMETER_CONFIG)")
            }
            return (path: path, text: text)
        }
        do {
            let settings = try ServerSettings(flags: flags, environment: environment, file: file)
            // The database is chosen at run time (embedded when unset); a placeholder until then.
            var configuration = ServerConfiguration(database: PostgresConnectionOptions(connectionString: ""))
            try settings.apply(to: &configuration)
            return (settings, configuration)
        } catch {
            throw ValidationError("\(error)")
        }
    }

    func validate() throws {
        _ = try settings()
    }

    func run() throws {
        var (settings, configuration) = try settings()
        if printConfig {
            print(settings.printed)
            return
        }
        let level = Logger.Level(rawValue: settings["log-level"] ?? "info") ?? .info
        if settings["log-format"] == "json" {
            LoggingSystem.bootstrap { JSONLogHandler(label: $0, level: level) }
        } else {
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        }
        let logger = Logger(label: "voicemeter")
        setOpenFileLimit(forConnections: configuration.listener.limits.connectionsMax)
        configuration.database = try DatabaseSelection.connect(url: settings["database-url"], notice: printNotice).options
        let server = try VoiceMeterServer.start(
            configuration: configuration,
            migrations: try MigrationSet.bundled(), logger: logger
        )
        let scheme = configuration.listener.tlsCertificatePath == nil ? "ws" : "wss"
        printNotice("VoiceMeter is listening on \(scheme)://\(configuration.listener.host):\(server.port)/v1/stream (health: /healthz, /readyz; metrics: /metrics). Stop with Ctrl-C.")
        waitForTerminationSignal()
        printNotice("Stopping: committing in-flight frames and closing connections…")
        server.shutdown()
    }
}

/// Blocks until SIGTERM or SIGINT.
func waitForTerminationSignal() {
    let received = DispatchSemaphore(value: 0)
    let sources = [SIGTERM, SIGINT].map { signalNumber in
        signal(signalNumber, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
        source.setEventHandler { received.signal() }
        source.resume()
        return source
    }
    received.wait()
    sources.forEach { $0.cancel() }
}
