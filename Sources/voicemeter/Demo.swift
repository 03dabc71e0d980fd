import ArgumentParser
import Foundation
import Logging
import VoiceMeterDomain
import VoiceMeterServer
import VoiceMeterSimulation
import VoiceMeterStore

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "See the product work end to end: a server, simulated 5-minute calls, verification and the margin report.",
        discussion: """
            Starts the metering server in this process on loopback (on DATABASE_URL or the embedded \
            PostgreSQL), streams --calls calls shaped like seed 002's 5-minute call at --speed, checks \
            that every call.summary equals the database, and prints the calls' margins and the month's P&L. \
            voicemeter-sim runs larger loads and the other scenarios.

            Example:
              voicemeter demo --calls 50 --speed 120
            """
    )

    @OptionGroup var database: DatabaseOptions
    @Option(help: "Calls to play (all live at once).") var calls = 20
    @Option(help: "Simulated seconds per real second (60 plays a 5-minute call in 5 s).") var speed = 60.0
    @Option(help: "Seed for the calls' sizes, timing and personas.") var seed: UInt64 = 1

    func validate() throws {
        guard (1...2_000).contains(calls) else { throw ValidationError("--calls must be between 1 and 2000 (voicemeter-sim runs larger loads)") }
        guard speed > 0, speed <= 100_000 else { throw ValidationError("--speed must be above 0 (60 plays a 5-minute call in 5 s)") }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        let connection = try database.connect()
        var options = SimulationOptions()
        options.calls = calls
        options.concurrency = calls
        options.speed = speed
        options.seed = seed
        options.runID = "demo-" + SimulationSession.freshRunID()
        printNotice("Playing \(calls) five-minute calls at \(String(format: "%g", speed))× through a server on loopback…")
        let printer = ProgressPrinter()
        let report = try await SimulationSession.run(options: options, database: connection, server: nil,
                                               logger: Logger(label: "voicemeter"), progress: printer.show)
        printer.finish()
        print(report.text)
        let finance = FinanceStore(connection: connection)
        print("\nMargins of these calls (voicemeter report margins; fixed costs amortized over the month's calls):")
        Report.print(try finance.margins(ofCalls: report.result.calls.map(\.callID)), as: .table)
        print("\nThis month's P&L (voicemeter report month):")
        Report.print(try finance.month(Timestamp.now.startOfMonth), as: .table)
        if !report.passed { throw ExitCode.failure }
    }
}
