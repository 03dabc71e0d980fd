import Foundation
import Logging
import PostgresClient
import VoiceMeterClient

/// A whole simulation: the scenario's budgets, a server (the given one, or one started here), the
/// run, and the verification against the database.
public enum SimulationSession {
    /// - Parameters:
    ///   - database: the server's database; needed to start a local server, prepare budgets and verify.
    ///   - server: a running server to use; `nil` starts one in this process on loopback.
    public static func run(options: SimulationOptions, database: PostgresConnection?, server: VoiceMeterEndpoint?,
                           logger: Logger, progress: (SimulationProgress) -> Void) async throws -> SimulationReport {
        if let database { try options.scenario.prepareUsers(options.userIDs, database: database) }
        let result: SimulationResult
        if let server {
            result = try SimulationRunner(options: options, endpoint: server).run(progress: progress)
        } else {
            guard let database else { preconditionFailure("a local server needs the database") }
            let deployment = try await LocalDeployment(database: database.options, runID: options.runID, connections: options.connectionCount, logger: logger)
            do {
                result = try SimulationRunner(options: options, endpoint: deployment.endpoint).run(progress: progress)
            } catch {
                await deployment.stop()
                throw error
            }
            await deployment.stop()
        }
        // A fresh session: the database may have restarted or failed over during the run, and a
        // multi-host URL finds the current primary.
        return SimulationReport(result: result, verification: try database.map { try Verification(result: result, database: PostgresConnection($0.options)) })
    }

    /// A run ID unique to this process and second, in base 36 (call IDs stay short).
    public static func freshRunID() -> String {
        String(Int(Date().timeIntervalSince1970), radix: 36) + String(getpid(), radix: 36)
    }
}

/// Progress on standard error: a bar redrawn in place on a terminal, a line every five seconds otherwise.
public final class ProgressPrinter {
    private let isTerminal = isatty(STDERR_FILENO) == 1
    private var lastLine = Date.distantPast

    public init() {}

    public func show(_ progress: SimulationProgress) {
        let seconds = progress.elapsed / .seconds(1)
        let status = "\(progress.callsFinished)/\(progress.callsTotal) calls · \(progress.callsLive) live · \(progress.cutOff) cut off · "
            + "\(progress.rejected) rejected · frames \(progress.framesSent) sent, \(progress.framesAcknowledged) acked · \(String(format: "%.1f", seconds)) s"
        if isTerminal {
            let width = 24
            let filled = progress.callsTotal == 0 ? width : width * progress.callsFinished / progress.callsTotal
            let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
            FileHandle.standardError.write(Data("\r\u{1B}[2K[\(bar)] \(status)".utf8))
        } else if Date().timeIntervalSince(lastLine) >= 5 || progress.callsFinished == progress.callsTotal {
            FileHandle.standardError.write(Data("progress: \(status)\n".utf8))
            lastLine = Date()
        }
    }

    /// Ends the bar's line.
    public func finish() {
        if isTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
