import VoiceMeterDomain

/// One thing a scenario promises, and whether the run kept it.
public struct ScenarioCheck: Sendable {
    public var name: String
    public var passed: Bool
    public var detail: String
}

/// The end-of-run report: counts, latencies, money per call, scenario checks and verification.
public struct SimulationReport: Sendable {
    public var result: SimulationResult
    public var verification: Verification?
    public var checks: [ScenarioCheck]

    public init(result: SimulationResult, verification: Verification?) {
        self.result = result
        self.verification = verification
        checks = Self.checks(of: result)
    }

    /// Whether the run did what its scenario promises and reconciles with the database.
    public var passed: Bool { checks.allSatisfy(\.passed) && (verification?.mismatches.isEmpty ?? true) }

    // MARK: Figures

    /// The latency at quantile `q` (nearest rank), in milliseconds.
    public func ackLatencyMilliseconds(_ q: Double) -> Double? {
        result.ackLatencies.nearestRank(q).map { $0 / .milliseconds(1) }
    }

    /// Mean, median and 95th percentile of a money figure over the calls that have it.
    public struct MoneyStatistics: Sendable {
        public var mean: ExactDecimal
        public var median: ExactDecimal
        public var p95: ExactDecimal
    }

    public var costPerCall: MoneyStatistics? { Self.statistics(result.calls.compactMap { $0.summary?.cost }) }
    public var marginPerCall: MoneyStatistics? { Self.statistics(result.calls.compactMap { $0.summary?.margin }) }

    static func statistics(_ values: [ExactDecimal]) -> MoneyStatistics? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        let total = sorted.reduce(ExactDecimal.zero) { (try? $0.adding($1)) ?? $0 }
        let mean = (try? total.divided(by: ExactDecimal(sorted.count), scale: 6, .halfEven)) ?? total
        func rank(_ q: Int) -> ExactDecimal { sorted[min(sorted.count - 1, sorted.count * q / 100)] }
        return MoneyStatistics(mean: mean, median: rank(50), p95: rank(95))
    }

    // MARK: Scenario checks

    static func checks(of result: SimulationResult) -> [ScenarioCheck] {
        let calls = result.calls
        let total = calls.count
        var checks: [ScenarioCheck] = []
        func check(_ name: String, _ passed: Bool, _ detail: String) { checks.append(ScenarioCheck(name: name, passed: passed, detail: detail)) }
        let failed = calls.filter { $0.outcome == .failed }
        check("every call got its answer", failed.isEmpty,
              failed.isEmpty ? "\(total) of \(total)" : "\(failed.count) failed, e.g. \(failed[0].callID): \(failed[0].detail ?? "")")
        let summarized = calls.filter { $0.summary != nil }
        let unacknowledged = summarized.filter { $0.framesAcknowledged != $0.framesSent }
        check("every frame of a summarized call was acknowledged", unacknowledged.isEmpty,
              unacknowledged.first.map { "\($0.callID): \($0.framesAcknowledged) of \($0.framesSent) acknowledged" } ?? "\(result.framesAcknowledged) of \(result.framesSent)")
        let expectedCodes: [String: Int] = result.options.scenario == .badInput
            ? Dictionary(uniqueKeysWithValues: Scenario.malformedMessages(callID: "", at: Timestamp(microsecondsSinceEpoch: 0)).map { ($0.expected.rawValue, result.count(.completed) + result.count(.cutOff)) })
            : [:]
        check(result.options.scenario == .badInput ? "each malformed frame got its documented error" : "no error frames",
              result.errorsByCode == expectedCodes,
              result.errorsByCode.isEmpty ? "none" : result.errorsByCode.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))
        check("every server message was readable", result.unreadableMessages == 0, "\(result.unreadableMessages) unreadable")
        switch result.options.scenario {
        case .normal, .badInput:
            check("every call completed", result.count(.completed) == total, "\(result.count(.completed)) of \(total)")
        case .budgetCutoff:
            check("every call was cut off by its per-call limit", calls.allSatisfy { $0.outcome == .cutOff && $0.cutoffScope == .call },
                  "\(calls.count { $0.cutoffScope == .call }) of \(total)")
            let reportedAfter = calls.filter { !$0.seqsAfterCutoff.isEmpty }
            check("usage reported after the cutoff was recorded", !reportedAfter.isEmpty && reportedAfter.allSatisfy { $0.framesAcknowledged == $0.framesSent },
                  "\(reportedAfter.count) calls reported their last telephony seconds after budget.cutoff")
            let limit = Scenario.cutoffCallLimit
            check("each cut-off call spent at least its limit", calls.allSatisfy { ($0.summary?.cost ?? .zero) >= limit },
                  "limit $\(limit.formatted(scale: 2))")
        case .monthExhausted:
            check("every call.start was refused for the month budget", calls.allSatisfy { $0.outcome == .rejected && $0.detail == "month_budget_exhausted" },
                  "\(result.count(.rejected)) of \(total) rejected")
            check("no usage was sent for a refused call", result.framesSent == 0, "\(result.framesSent) frames")
        case .monthLimit:
            let stopped = calls.filter { ($0.outcome == .rejected && $0.detail == "month_budget_exhausted") || $0.cutoffScope == .month }
            check("the month limit stopped calls (refused at start or cut off)", !stopped.isEmpty,
                  "\(result.count(.rejected)) refused, \(calls.count { $0.cutoffScope == .month }) cut off for the month, \(result.count(.completed)) completed")
            check("no other cutoffs", calls.allSatisfy { $0.cutoffScope == nil || $0.cutoffScope == .month }, "scopes: month only")
        case .reconnect:
            check("every call completed across reconnects", result.count(.completed) == total, "\(result.count(.completed)) of \(total)")
            check("connections were dropped and re-established", result.reconnects > 0, "\(result.reconnects) reconnects")
        case .duplicates:
            check("every call completed", result.count(.completed) == total, "\(result.count(.completed)) of \(total)")
            check("duplicates were sent", result.duplicatesSent > 0, "\(result.duplicatesSent) duplicate frames")
        }
        return checks
    }
}
