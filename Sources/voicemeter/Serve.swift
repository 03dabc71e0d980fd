import ArgumentParser
import Dispatch
import Foundation
import Logging
import PostgresClient
import VoiceMeterDatabase
import VoiceMeterServer
import VoiceMeterStore
import WebSocketTransport

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the metering server: WebSocket ingress at /v1/stream, /healthz, /readyz and /metrics.",
        discussion: """
            Voice pipelines connect with Authorization: Bearer <ingest token> (voicemeter tokens create NAME) \
            and stream usage frames (protocol v1, docs/protocol.md). SIGTERM or SIGINT stops it gracefully: \
            in-flight frames are committed and acknowledged, connections closed with 1001.

            Every setting comes from, first to last: its flag (--KEY VALUE or --KEY=VALUE), its environment \
            variable, the configuration file (--config or VOICEMETER_CONFIG: key = value lines with the same \
            keys), the default. --print-config shows the effective values and their sources, secrets redacted.

            Settings (flag, environment variable, default: meaning):
            \(ServerSettings.all.map { "  --\($0.key) (\($0.environment), default \($0.defaultValue ?? "unset")): \($0.help)" }.joined(separator: "\n"))

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
    /// The settings given as flags (`--KEY VALUE`), read against their declarations (`ServerSettings.all`).
    @Argument(parsing: .allUnrecognized, help: ArgumentHelp("Settings: --KEY VALUE for any key listed above.", valueName: "settings"))
    var settingArguments: [String] = []

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
            let settings = try ServerSettings(flags: try ServerSettings.flags(from: settingArguments), environment: environment, file: file)
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

    func run() async throws {
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
        let server = try await VoiceMeterServer.start(configuration: configuration, migrations: try MigrationSet.bundled(), logger: logger,
                                                      stopsOnSignals: true)
        let scheme = configuration.listener.tlsCertificatePath == nil ? "ws" : "wss"
        printNotice("VoiceMeter is listening on \(scheme)://\(configuration.listener.host):\(server.port)/v1/stream (health: /healthz, /readyz; metrics: /metrics). Stop with Ctrl-C.")
        try await server.stopped()
    }
}
