import Foundation
import VoiceMeterDomain

extension SimulationReport {
    /// The report for people, as printed at the end of a run.
    public var text: String {
        let options = result.options
        var lines: [String] = []
        func line(_ label: String, _ value: String) { lines.append(label.padding(toLength: 14, withPad: " ", startingAt: 0) + value) }
        let seconds = result.elapsed / .seconds(1)
        lines.append("VoiceMeter simulation — scenario \(options.scenario.rawValue): \(options.scenario.explanation)")
        line("run", "\(options.calls) calls, \(options.concurrency) at a time on \(options.connectionCount) connections, speed \(Self.plain(options.speed))×, seed \(options.seed), \(String(format: "%.1f", seconds)) s")
        line("calls", "completed \(result.count(.completed))  cut off \(result.count(.cutOff))  rejected \(result.count(.rejected))  failed \(result.count(.failed))")
        line("frames", "sent \(result.framesSent)  acknowledged \(result.framesAcknowledged)  duplicates \(result.duplicatesSent)  reconnects \(result.reconnects)  errors \(result.errorsByCode.values.reduce(0, +))  budget warnings \(result.budgetWarnings)")
        if let p50 = ackLatencyMilliseconds(0.5), let p99 = ackLatencyMilliseconds(0.99), let max = ackLatencyMilliseconds(1) {
            line("ack latency", String(format: "p50 %.1f ms  p99 %.1f ms  max %.1f ms", p50, p99, max))
        }
        if let cost = costPerCall { line("cost/call", "mean $\(cost.mean.formatted(scale: 4))  p50 $\(cost.median.formatted(scale: 4))  p95 $\(cost.p95.formatted(scale: 4))") }
        if let margin = marginPerCall { line("margin/call", "mean $\(margin.mean.formatted(scale: 4))  p50 $\(margin.median.formatted(scale: 4))  p95 $\(margin.p95.formatted(scale: 4))  (revenue − API cost − payment fee)") }
        for sample in result.errorSamples { line("error", sample) }
        for check in checks { line(check.passed ? "  ok" : "  FAILED", "\(check.name): \(check.detail)") }
        if let verification {
            line("verification", verification.mismatches.isEmpty
                 ? "\(verification.callsChecked) calls: every call.summary equals the database, every frame stored once, rollups equal events"
                 : "\(verification.mismatches.count) MISMATCHES")
            for mismatch in verification.mismatches.prefix(10) { line("  mismatch", mismatch) }
        } else {
            line("verification", "skipped (--no-verify)")
        }
        lines.append(passed ? "PASSED" : "FAILED")
        return lines.joined(separator: "\n")
    }

    /// The report as one JSON object (`--json`); money and usage as decimal strings.
    public var json: String {
        let options = result.options
        func number(_ value: Int) -> JSONValue { .number(String(value)) }
        func milliseconds(_ q: Double) -> JSONValue { ackLatencyMilliseconds(q).map { .number(String(format: "%.3f", $0)) } ?? .null }
        func money(_ statistics: MoneyStatistics?) -> JSONValue {
            guard let statistics else { return .null }
            return .object([("mean", .string(statistics.mean.description)), ("p50", .string(statistics.median.description)), ("p95", .string(statistics.p95.description))])
        }
        let document = JSONValue.object([
            ("scenario", .string(options.scenario.rawValue)),
            ("calls", number(options.calls)), ("concurrency", number(options.concurrency)), ("connections", number(options.connectionCount)),
            ("speed", .number(Self.plain(options.speed))), ("seed", .number(String(options.seed))),
            ("elapsed_ms", number(Int(result.elapsed / .milliseconds(1)))),
            ("outcomes", .object([("completed", number(result.count(.completed))), ("cut_off", number(result.count(.cutOff))),
                                  ("rejected", number(result.count(.rejected))), ("failed", number(result.count(.failed)))])),
            ("frames", .object([("sent", number(result.framesSent)), ("acknowledged", number(result.framesAcknowledged)),
                                ("duplicates", number(result.duplicatesSent)), ("reconnects", number(result.reconnects)),
                                ("budget_warnings", number(result.budgetWarnings))])),
            ("errors", .object(result.errorsByCode.sorted { $0.key < $1.key }.map { ($0.key, number($0.value)) })),
            ("ack_latency_ms", .object([("p50", milliseconds(0.5)), ("p99", milliseconds(0.99)), ("max", milliseconds(1))])),
            ("cost_per_call", money(costPerCall)), ("margin_per_call", money(marginPerCall)),
            ("checks", .array(checks.map { .object([("name", .string($0.name)), ("passed", .bool($0.passed)), ("detail", .string($0.detail))]) })),
            ("verification", verification.map {
                .object([("calls_checked", number($0.callsChecked)), ("frames_stored", number($0.framesStored)),
                         ("acknowledged_but_lost", number($0.acknowledgedButLost)), ("duplicates", number($0.duplicates)),
                         ("rollups_equal_events", .bool($0.rollupsEqualEvents)), ("mismatches", .array($0.mismatches.map(JSONValue.string)))])
            } ?? .null),
            ("passed", .bool(passed)),
        ])
        return document.serialized
    }

    private static func plain(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }
}
