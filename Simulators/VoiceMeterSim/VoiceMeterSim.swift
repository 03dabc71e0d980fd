import ArgumentParser
import Foundation
import Logging
import PostgresClient
import VoiceMeterClient
import VoiceMeterDatabase
import VoiceMeterDomain
import VoiceMeterServer
import VoiceMeterSimulation

@main
struct VoiceMeterSim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "voicemeter-sim",
        abstract: "Play voice-AI calls against a real server (play, the default), or explore the metering core by deterministic simulation (simulate).",
        subcommands: [Play.self, Simulate.self],
        defaultSubcommand: Play.self
    )
}

/// Plays calls against a real server and database.
struct Play: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "play",
        abstract: "Replay 5-minute voice-AI calls against a VoiceMeter server and check every call against the database.",
        discussion: """
            Each call is shaped like seed 002's 5-minute call: Twilio seconds every 30 s, Deepgram \
            seconds every 10 s, an LLM turn of ~10,000 tokens a minute (GPT-4 Turbo when Cerebras \
            "fails", --llm-fallback-percent), ~400 TTS characters a minute in sentences; timing, \
            sizes, durations and personas vary with --seed. Timestamps run in simulated time.

            Without --server it starts a server in this process on loopback, on DATABASE_URL or the \
            embedded PostgreSQL. At the end it prints a report and verifies that every call.summary \
            equals what the database holds; it exits 1 on any mismatch or failed scenario check.

            Scenarios:
            \(Scenario.allCases.map { "  \($0.rawValue.padding(toLength: 16, withPad: " ", startingAt: 0))\($0.explanation)" }.joined(separator: "\n"))

            Examples:
              voicemeter-sim --calls 20
              voicemeter-sim --calls 1000 --concurrency 200 --speed 60
              voicemeter-sim --scenario budget-cutoff --calls 10
              voicemeter-sim --replay session.jsonl --calls 5
              voicemeter-sim --server ws://127.0.0.1:8787 --token vmi_… --calls 50
            """
    )

    @Option(help: "Calls to play.") var calls = 20
    @Option(help: "Calls live at the same time.") var concurrency = 20
    @Option(help: "WebSocket connections carrying the calls (default: one per live call).") var connections: Int?
    @Option(help: "Seconds from answer to hang-up of a generated call.") var duration = 300
    @Option(help: "Simulated seconds per real second (60 plays a 5-minute call in 5 s).") var speed = 60.0
    @Option(help: "Seed for the calls' sizes, timing and personas; the same seed replays the same calls.") var seed: UInt64 = 1
    @Option(help: ArgumentHelp("What to exercise: \(Scenario.allCases.map(\.rawValue).joined(separator: ", ")).", valueName: "name"))
    var scenario = "normal"
    @Option(help: ArgumentHelp("Replay this recorded session (JSON Lines of usage records with offsets) as every call.", valueName: "file"))
    var replay: String?
    @Option(help: "Users the calls belong to (default: one per ten calls).") var users: Int?
    @Option(name: .customLong("run-id"), help: ArgumentHelp("Tag of this run's call and user IDs (SIM-<id>-000001, sim-<id>-user-0001); default: unique per run.", valueName: "id"))
    var runID: String?
    @Option(name: .customLong("first-call"), help: ArgumentHelp("Number of the run's first call ID (more calls of the same --run-id users).", valueName: "n"))
    var firstCall = 1
    @Option(name: .customLong("llm-fallback-percent"), help: "Chance per LLM turn that GPT-4 Turbo answers instead of Cerebras.")
    var llmFallbackPercent = 3
    @Flag(help: "Play seed 002's canonical call exactly (no jitter, no fallback): API cost $0.4045 per call.") var canonical = false
    @Option(help: ArgumentHelp("What callers pay per call in USD.", valueName: "decimal")) var revenue = "4.99"
    @Option(help: ArgumentHelp("A running server (ws:// or wss://host:port); default: start one here.", valueName: "url")) var server: String?
    @Option(help: ArgumentHelp("Ingest token for --server (default: $VOICEMETER_TOKEN).", valueName: "token")) var token: String?
    @Option(name: .customLong("database-url"), help: ArgumentHelp("The server's database (default: $DATABASE_URL, else the embedded PostgreSQL).", valueName: "url"))
    var databaseURL: String?
    @Option(name: .customLong("answer-timeout"), help: ArgumentHelp("Seconds to wait for call.accepted or call.summary before a call counts as failed.", valueName: "s"))
    var answerTimeout = 30
    @Flag(name: .customLong("no-verify"), help: "Do not read the database (only with --server): no budgets for scenarios, no verification.")
    var noVerify = false
    @Flag(help: "Print the report as JSON on standard output.") var json = false

    func validate() throws {
        guard calls >= 1, concurrency >= 1, (connections ?? 1) >= 1, (users ?? 1) >= 1 else {
            throw ValidationError("--calls, --concurrency, --connections and --users must be at least 1")
        }
        guard speed > 0, speed <= 100_000 else { throw ValidationError("--speed must be above 0 (1 is real time, 60 plays 5 minutes in 5 s)") }
        guard duration >= 1 else { throw ValidationError("--duration is in seconds and must be at least 1") }
        guard (0...100).contains(llmFallbackPercent) else { throw ValidationError("--llm-fallback-percent must be between 0 and 100") }
        guard Scenario(rawValue: scenario) != nil else {
            throw ValidationError("unknown --scenario '\(scenario)'; use one of: \(Scenario.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard let revenue = ExactDecimal(revenue), !revenue.isNegative else { throw ValidationError("--revenue must be a decimal like 4.99") }
        if noVerify {
            guard server != nil else { throw ValidationError("--no-verify goes with --server: a server started here always has its database") }
            guard [Scenario.normal, .reconnect, .duplicates, .badInput].contains(Scenario(rawValue: scenario)!) else {
                throw ValidationError("--scenario \(scenario) sets users' budgets in the database, so it cannot run with --no-verify")
            }
        }
        if server != nil, resolvedToken == nil {
            throw ValidationError("--server needs an ingest token: pass --token or set VOICEMETER_TOKEN (create one with `voicemeter tokens create NAME`)")
        }
    }

    private var resolvedToken: String? { token ?? ProcessInfo.processInfo.environment["VOICEMETER_TOKEN"].flatMap { $0.isEmpty ? nil : $0 } }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        var options = SimulationOptions()
        options.calls = calls
        options.concurrency = concurrency
        options.connections = connections
        options.speed = speed
        options.seed = seed
        options.scenario = Scenario(rawValue: scenario)!
        options.users = users
        options.runID = runID ?? SimulationSession.freshRunID()
        options.firstCall = firstCall
        options.answerTimeout = .seconds(answerTimeout)
        options.shape.durationSeconds = duration
        options.shape.jitter = !canonical
        options.shape.llmFallbackPerMille = llmFallbackPercent * 10
        options.shape.revenue = ExactDecimal(revenue)!
        if let replay {
            guard let text = try? String(contentsOfFile: replay, encoding: .utf8) else {
                throw ValidationError("cannot read --replay \(replay); check the path")
            }
            do {
                options.replay = try ReplayFile.parse(text, revenue: options.shape.revenue)
            } catch {
                throw ValidationError("--replay \(replay), \(error)")
            }
        }
        let endpoint = try server.map { try Self.endpoint($0, token: resolvedToken!) }
        let database = noVerify ? nil : try DatabaseSelection.connect(url: DatabaseSelection.url(flag: databaseURL), notice: { Self.notice($0) })
        let printer = ProgressPrinter()
        let report = try await SimulationSession.run(options: options, database: database, server: endpoint,
                                               logger: Logger(label: "voicemeter-sim"), progress: printer.show)
        printer.finish()
        print(json ? report.json : report.text)
        if !report.passed { throw ExitCode.failure }
    }

    /// `ws://host:port[/path]` or `wss://…` as an endpoint.
    static func endpoint(_ url: String, token: String) throws -> VoiceMeterEndpoint {
        guard let components = URLComponents(string: url), let scheme = components.scheme, ["ws", "wss"].contains(scheme),
              let host = components.host, !host.isEmpty
        else { throw ValidationError("--server '\(url)' is not a ws:// or wss:// URL; write for example ws://127.0.0.1:8787") }
        var endpoint = VoiceMeterEndpoint(host: host, port: components.port ?? (scheme == "wss" ? 443 : 80), bearerToken: token)
        endpoint.useTLS = scheme == "wss"
        if !components.path.isEmpty && components.path != "/" { endpoint.path = components.path }
        return endpoint
    }

    static func notice(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
