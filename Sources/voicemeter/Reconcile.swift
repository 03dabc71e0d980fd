import ArgumentParser
import Foundation
import VoiceMeterDomain
import VoiceMeterStore

struct Reconcile: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare the ledger's estimated costs with what providers billed, and mark matches verified.",
        discussion: """
            Examples:
              voicemeter reconcile twilio calls.csv            (Twilio call records: CallSid, Duration, Price)
              voicemeter reconcile costs.csv --threshold 0.01  (columns call_id, service, actual_cost)
            Every reported row is recorded in cost_reconciliations; rows with no matching events are listed, not dropped.
            """
    )

    @OptionGroup var database: DatabaseOptions
    @Argument(help: "'twilio' followed by a Twilio export, or a generic CSV file.") var arguments: [String]
    @Option(help: "Report calls whose actual cost differs from the estimate by more than this (USD).") var threshold = "0.01"

    func validate() throws {
        guard arguments.count == 1 || (arguments.count == 2 && arguments[0] == "twilio") else {
            throw ValidationError("give a CSV file, or 'twilio' and a Twilio export: voicemeter reconcile [twilio] FILE.csv")
        }
        guard let value = ExactDecimal(threshold), !value.isNegative else { throw ValidationError("--threshold must be an amount in USD, e.g. 0.01") }
    }

    func run() throws {
        let file = arguments.last!
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw CommandFailure("cannot read \(file) as UTF-8 text; check the path") }
        let costs = arguments.count == 2 ? try ReconciliationFile.twilio(text) : try ReconciliationFile.generic(text)
        let lines = try ReconciliationStore(connection: try database.connect()).reconcile(costs, source: file)
        let limit = ExactDecimal(threshold)!

        var byService: [String: (estimated: ExactDecimal, actual: ExactDecimal, rows: Int)] = [:]
        for line in lines where line.estimated != nil {
            var entry = byService[line.reported.service] ?? (.zero, .zero, 0)
            entry.estimated = try entry.estimated.adding(line.estimated!)
            entry.actual = try entry.actual.adding(line.reported.actualCost)
            entry.rows += 1
            byService[line.reported.service] = entry
        }
        print("Drift by service (actual − estimated):")
        print(TextTable(header: ["SERVICE", "ROWS", "ESTIMATED", "ACTUAL", "DRIFT"], rows: try byService.sorted { $0.key < $1.key }.map { service, entry in
            [service, String(entry.rows), entry.estimated.formatted(scale: 4), entry.actual.formatted(scale: 4),
             try entry.actual.subtracting(entry.estimated).formatted(scale: 4)]
        }).rendered)
        let off = lines.filter { line in line.difference.map { ((try? $0.isNegative ? $0.negated() : $0) ?? $0) > limit } ?? false }
        print("\nCalls off by more than \(limit) USD: \(off.isEmpty ? "none" : "")")
        for line in off { print("  \(line.reported.callID) \(line.reported.service): estimated \(line.estimated!), actual \(line.reported.actualCost)") }
        let unmatched = lines.filter { $0.estimated == nil }
        print("\nRows with no matching events (recorded, not dropped): \(unmatched.isEmpty ? "none" : "")")
        for line in unmatched { print("  line \(line.reported.line): \(line.reported.callID) \(line.reported.service) \(line.reported.actualCost)") }
    }
}
