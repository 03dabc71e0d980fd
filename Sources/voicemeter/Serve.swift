import ArgumentParser
import Dispatch
import Foundation
import Logging
import VoiceMeterServer
import VoiceMeterStore
import WebSocketTransport

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the metering server: WebSocket ingress at /v1/stream, /healthz and /readyz.",
        discussion: """
            Voice pipelines connect with Authorization: Bearer <ingest token> (voicemeter tokens create NAME) \
            and stream usage frames (protocol v1, docs/protocol.md). SIGTERM or SIGINT stops it gracefully: \
            in-flight frames are committed and acknowledged, connections closed with 1001.

            Examples:
              voicemeter serve
              voicemeter serve --listen 0.0.0.0:8787 --tls-cert server.pem --tls-key server.key
            """
    )

    @OptionGroup var database: DatabaseOptions

    @Option(help: ArgumentHelp("Address and port to bind exactly; port 0 picks a free one.", valueName: "host:port"))
    var listen = "127.0.0.1:8787"

    @Option(name: .customLong("tls-cert"), help: ArgumentHelp("PEM certificate chain: serve wss:// (needs --tls-key).", valueName: "file"))
    var tlsCertificate: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("PEM private key for --tls-cert.", valueName: "file"))
    var tlsKey: String?

    @Option(name: .customLong("allowed-origin"), help: "Accept upgrades only from this Origin (repeatable; default: any).")
    var allowedOrigins: [String] = []

    @Option(name: .customLong("writer-connections"), help: "Ledger writers, each with its own database connection (1 or 2 suit 2 cores).")
    var writerConnections = 2

    @Option(name: .customLong("budget-tick-seconds"), help: "How often committed spend is refreshed and cutoffs re-sent.")
    var budgetTickSeconds = 30

    @Option(name: .customLong("batch-events"), help: "Commit when this many events wait.")
    var batchEvents = 2_000

    @Option(name: .customLong("flush-ms"), help: "Commit when the oldest waiting event is this many milliseconds old.")
    var flushMilliseconds = 100

    func validate() throws {
        _ = try ListenAddress(listen)
        guard (tlsCertificate == nil) == (tlsKey == nil) else {
            throw ValidationError("--tls-cert and --tls-key go together: give both for wss://, or neither for ws://")
        }
        for file in [tlsCertificate, tlsKey].compactMap({ $0 }) where !FileManager.default.isReadableFile(atPath: file) {
            throw ValidationError("cannot read \(file); check the path and permissions")
        }
        guard batchEvents >= 1, flushMilliseconds >= 1, writerConnections >= 1, budgetTickSeconds >= 1 else {
            throw ValidationError("--batch-events, --flush-ms, --writer-connections and --budget-tick-seconds must be at least 1")
        }
    }

    func run() throws {
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        let logger = Logger(label: "voicemeter")
        raiseOpenFileLimit()
        let connection = try database.connect()
        let address = try ListenAddress(listen)
        var configuration = ServerConfiguration(database: connection.options)
        configuration.listener.host = address.host
        configuration.listener.port = address.port
        configuration.listener.tlsCertificatePath = tlsCertificate
        configuration.listener.tlsPrivateKeyPath = tlsKey
        configuration.listener.allowedOrigins = allowedOrigins.isEmpty ? nil : allowedOrigins
        configuration.writerConnections = writerConnections
        configuration.budgetTickSeconds = budgetTickSeconds
        configuration.writerBatchEventsMax = batchEvents
        configuration.writerFlushIntervalMilliseconds = flushMilliseconds
        let server = try VoiceMeterServer.start(
            configuration: configuration,
            migrations: try MigrationSet.load(directory: try MigrationSet.locateDirectory()), logger: logger
        )
        let scheme = tlsCertificate == nil ? "ws" : "wss"
        printNotice("VoiceMeter is listening on \(scheme)://\(address.host):\(server.port)/v1/stream (health: /healthz, /readyz). Stop with Ctrl-C.")
        waitForTerminationSignal()
        printNotice("Stopping: committing in-flight frames and closing connections…")
        server.shutdown()
    }
}

/// `host:port`, with IPv6 literals in brackets (`[::1]:8787`).
struct ListenAddress {
    var host: String
    var port: Int

    init(_ text: String) throws {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port) else {
            throw ValidationError("--listen '\(text)' is not host:port; write for example 127.0.0.1:8787 or [::1]:8787")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw ValidationError("--listen '\(text)' has no host; write 0.0.0.0:\(port) for every interface") }
        self.host = host
        self.port = port
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
