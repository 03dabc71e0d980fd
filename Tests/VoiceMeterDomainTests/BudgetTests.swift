import Testing
import VoiceMeterDomain

@Suite("Budgets")
struct BudgetTests {
    private func d(_ text: String) -> ExactDecimal { ExactDecimal(text)! }
    let policy = BudgetPolicy(callLimit: ExactDecimal(10), dayLimit: ExactDecimal(25), monthLimit: ExactDecimal(100))

    @Test("crossing 75% warns once; crossing 90% warns once more; reaching 100% reports the limit once")
    func callThresholds() {
        var meter = BudgetMeter(scope: .call)
        #expect(meter.check(spent: d("7.49"), policy: policy).isEmpty)
        #expect(meter.check(spent: d("7.52"), policy: policy) == [.warning(scope: .call, spent: d("7.52"), limit: d("10"), percent: d("75.2"), threshold: 75)])
        #expect(meter.check(spent: d("8"), policy: policy).isEmpty)
        #expect(meter.check(spent: d("9.5"), policy: policy) == [.warning(scope: .call, spent: d("9.5"), limit: d("10"), percent: d("95"), threshold: 90)])
        #expect(meter.check(spent: d("10.01"), policy: policy) == [.limitReached(scope: .call, spent: d("10.01"), limit: d("10"))])
        #expect(meter.check(spent: d("12"), policy: policy).isEmpty)
    }

    @Test("a warning fires at exactly its percentage, not a fraction of a cent before")
    func exactThreshold() {
        var meter = BudgetMeter(scope: .call)
        #expect(meter.check(spent: d("7.4999999999"), policy: policy).isEmpty)
        #expect(meter.check(spent: d("7.5"), policy: policy) == [.warning(scope: .call, spent: d("7.5"), limit: d("10"), percent: d("75"), threshold: 75)])
    }

    @Test("new settings apply at the next check: a lower limit or a lower warning percent fires for spend already quiet")
    func settingsChange() {
        var meter = BudgetMeter(scope: .call)
        #expect(meter.check(spent: d("5"), policy: policy).isEmpty)
        let lowerWarning = policy.overridden(callLimit: nil, dayLimit: nil, monthLimit: nil, warnPercent: 40, autoCutoff: nil)
        #expect(meter.check(spent: d("5"), policy: lowerWarning) == [.warning(scope: .call, spent: d("5"), limit: d("10"), percent: d("50"), threshold: 40)])
        let lowerLimit = policy.overridden(callLimit: d("5.5"), dayLimit: nil, monthLimit: nil, warnPercent: nil, autoCutoff: nil)
        #expect(meter.check(spent: d("5"), policy: lowerLimit) == [.warning(scope: .call, spent: d("5"), limit: d("5.5"), percent: d("90.9"), threshold: 90)])
        #expect(meter.check(spent: d("5.5"), policy: lowerLimit) == [.limitReached(scope: .call, spent: d("5.5"), limit: d("5.5"))])
    }

    @Test("a lower limit alone, with the same spend and percents, fires at the next check")
    func limitChangeAlone() {
        var meter = BudgetMeter(scope: .call)
        #expect(meter.check(spent: d("5"), policy: policy).isEmpty)
        #expect(meter.check(spent: d("5"), policy: policy).isEmpty)
        let lowerLimit = policy.overridden(callLimit: d("5.5"), dayLimit: nil, monthLimit: nil, warnPercent: nil, autoCutoff: nil)
        #expect(meter.check(spent: d("5"), policy: lowerLimit) == [.warning(scope: .call, spent: d("5"), limit: d("5.5"), percent: d("90.9"), threshold: 90)])
    }

    @Test("a raised limit fires again when it is reached")
    func raisedLimitFiresAgain() {
        var meter = BudgetMeter(scope: .month)
        #expect(meter.check(spent: d("101"), policy: policy).count == 2)
        let raised = policy.overridden(callLimit: nil, dayLimit: nil, monthLimit: d("200"), warnPercent: nil, autoCutoff: nil)
        #expect(meter.check(spent: d("101"), policy: raised).isEmpty)
        #expect(meter.check(spent: d("201"), policy: raised) == [
            .warning(scope: .month, spent: d("201"), limit: d("200"), percent: d("100.5"), threshold: 95),
            .limitReached(scope: .month, spent: d("201"), limit: d("200")),
        ])
    }

    /// The threshold rules worked out from scratch on every check (what `BudgetMeter` must match).
    private struct ReferenceMeter {
        let scope: BudgetScope
        var warned: Set<Int> = []
        var limitReached = false
        var limitSeen: ExactDecimal?

        mutating func check(spent: ExactDecimal, policy: BudgetPolicy) -> [BudgetSignal] {
            guard let limit = policy.limit(for: scope) else { return [] }
            // A new limit is a new budget: its thresholds and its limit fire again.
            if limit != limitSeen {
                warned = []
                limitReached = false
                limitSeen = limit
            }
            guard limit > .zero else {
                guard spent > .zero, !limitReached else { return [] }
                limitReached = true
                return [.limitReached(scope: scope, spent: spent, limit: limit)]
            }
            var signals: [BudgetSignal] = []
            let percent = try! spent.multiplied(by: ExactDecimal(100)).divided(by: limit, scale: 1, .down)
            for threshold in policy.warningPercents(for: scope) where !warned.contains(threshold) && percent >= ExactDecimal(threshold) {
                warned.insert(threshold)
                signals = [.warning(scope: scope, spent: spent, limit: limit, percent: percent, threshold: threshold)]
            }
            if spent >= limit, !limitReached {
                limitReached = true
                signals.append(.limitReached(scope: scope, spent: spent, limit: limit))
            }
            return signals
        }
    }

    @Test("any sequence of spends and settings changes signals exactly as thresholds worked out from scratch", arguments: 0..<40)
    func matchesFromScratch(round: Int) {
        var random = SeededRandom(seed: UInt64(round) &+ 7_000)
        let policies = [
            policy,
            policy.overridden(callLimit: d("5.5"), dayLimit: nil, monthLimit: nil, warnPercent: nil, autoCutoff: nil),
            policy.overridden(callLimit: nil, dayLimit: nil, monthLimit: nil, warnPercent: 40, autoCutoff: nil),
            BudgetPolicy(callLimit: d("0"), dayLimit: d("0.3"), monthLimit: d("12.3456"), callWarningPercents: [120, 50], periodWarningPercents: [99]),
            BudgetPolicy(callLimit: nil, dayLimit: nil, monthLimit: nil),
            // Every limit lower, the same percents: only the limits change.
            BudgetPolicy(callLimit: d("5.5"), dayLimit: d("13"), monthLimit: d("60")),
        ]
        for scope in [BudgetScope.call, .day, .month] {
            var meter = BudgetMeter(scope: scope)
            var reference = ReferenceMeter(scope: scope)
            var spent = ExactDecimal.zero
            var chosen = policies[0]
            for step in 0..<150 {
                // Now and then the user's settings change.
                if random.next() % 4 == 0 { chosen = policies[Int(random.next() % UInt64(policies.count))] }
                // Spend mostly grows (a frame's cost), now and then falls (a refresh).
                let change = ExactDecimal(significand: Int128(random.next() % 150) - (random.next() % 10 == 0 ? 900 : 0), scale: 2)
                spent = try! spent.adding(change)
                #expect(meter.check(spent: spent, policy: chosen) == reference.check(spent: spent, policy: chosen), "scope \(scope) step \(step)")
            }
        }
    }

    @Test("one frame that jumps past several thresholds and the limit warns at the highest and reports the limit")
    func jump() {
        var meter = BudgetMeter(scope: .month)
        #expect(meter.check(spent: d("101"), policy: policy) == [
            .warning(scope: .month, spent: d("101"), limit: d("100"), percent: d("101"), threshold: 95),
            .limitReached(scope: .month, spent: d("101"), limit: d("100")),
        ])
    }

    @Test("day and month use 80% and 95%; a scope without a limit never signals")
    func periodThresholds() {
        var day = BudgetMeter(scope: .day)
        #expect(day.check(spent: d("19.99"), policy: policy).isEmpty)
        #expect(day.check(spent: d("20"), policy: policy).first == .warning(scope: .day, spent: d("20"), limit: d("25"), percent: d("80"), threshold: 80))
        var unlimited = BudgetMeter(scope: .day)
        let noDayLimit = BudgetPolicy(callLimit: ExactDecimal(10), dayLimit: nil, monthLimit: ExactDecimal(100))
        #expect(unlimited.check(spent: d("1000"), policy: noDayLimit).isEmpty)
    }

    @Test("admission refuses an exhausted day or month and accepts otherwise")
    func admission() {
        let estimate = d("0.9")
        #expect(Admission.check(policy: policy, daySpent: d("1"), monthSpent: d("50"), estimatedCallCost: estimate) == nil)
        #expect(Admission.check(policy: policy, daySpent: d("24.5"), monthSpent: d("50"), estimatedCallCost: estimate)?.refusal == .dayBudgetExhausted)
        let month = Admission.check(policy: policy, daySpent: d("0"), monthSpent: d("100.02"), estimatedCallCost: estimate)
        #expect(month?.refusal == .monthBudgetExhausted)
        #expect(month?.spent == d("100.02"))
        #expect(month?.limit == d("100"))
    }

    @Test("a settings row overrides only what it sets")
    func overrides() {
        let custom = policy.overridden(callLimit: d("5"), dayLimit: nil, monthLimit: nil, warnPercent: 60, autoCutoff: false)
        #expect(custom.callLimit == d("5"))
        #expect(custom.dayLimit == d("25"))
        #expect(custom.callWarningPercents == [60, 90])
        #expect(custom.autoCutoff == false)
        #expect(policy.overridden(callLimit: nil, dayLimit: nil, monthLimit: nil, warnPercent: 95, autoCutoff: nil).callWarningPercents == [95])
    }
}

@Suite("Burn projection")
struct BurnProjectionTests {
    let start = Timestamp(rfc3339: "2026-11-22T18:00:00Z")!

    @Test("at $0.10 per minute, $0.50 of a $1.00 limit after 5 minutes runs out 5 minutes later")
    func projection() {
        let now = start.adding(seconds: 300)
        #expect(BurnProjection.exhaustion(spent: ExactDecimal("0.5")!, limit: ExactDecimal(1), since: start, now: now)
                == start.adding(seconds: 600))
    }

    @Test("a projection inside the next tick warns; one beyond it, or with nothing spent, does not")
    func horizon() {
        let now = start.adding(seconds: 300)
        #expect(BurnProjection.exhaustsWithin(horizonSeconds: 30, spent: ExactDecimal("0.96")!, limit: ExactDecimal(1), since: start, now: now) != nil)
        #expect(BurnProjection.exhaustsWithin(horizonSeconds: 30, spent: ExactDecimal("0.5")!, limit: ExactDecimal(1), since: start, now: now) == nil)
        #expect(BurnProjection.exhaustion(spent: .zero, limit: ExactDecimal(1), since: start, now: now) == nil)
        #expect(BurnProjection.exhaustion(spent: ExactDecimal(2), limit: ExactDecimal(1), since: start, now: now) == nil)
        // A projection past the end of representable time is no projection, never a crash.
        let ancient = Timestamp(microsecondsSinceEpoch: .min / 2)
        #expect(BurnProjection.exhaustion(spent: ExactDecimal("0.0000001")!, limit: ExactDecimal(1), since: ancient, now: now) == nil)
    }
}
