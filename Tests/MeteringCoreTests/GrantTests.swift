import MeteringCore
import Testing
import VoiceMeterDomain

/// Budgets held across cores and nodes through grants (issue 22): a month limit that cuts off,
/// $0.50 expected per call, $0.10 a request.
@Suite struct GrantTests {
    static let monthLimit = BudgetPolicy(callLimit: nil, dayLimit: nil, monthLimit: ExactDecimal("3.00")!)

    private func d(_ text: String) -> ExactDecimal { ExactDecimal(text)! }

    @Test func concurrentStartsReserveTheirExpectedCostSoOnlyWhatFitsIsAdmitted() {
        var harness = CoreHarness(policy: Self.monthLimit)
        harness.grantRoom = d("1.20")
        harness.startCall("C1")
        harness.startCall("C2")
        let third = harness.startCall("C3")
        #expect(third.rejections == ["month_budget_exhausted"])
        #expect(harness.core.audit().map(\.callID) == ["C1", "C2"])
        #expect(harness.actions.grantRequests.filter { if case .admission = $0.purpose { true } else { false } }.map(\.want) == [d("0.50"), d("0.50"), d("0.50")])
    }

    @Test func aFrameWaitsWhileTheGrantIsSpentAndIsTakenOnceTopUpArrives() {
        var harness = CoreHarness(policy: Self.monthLimit)
        harness.startCall()
        harness.answersGrants = false
        for seq in 1...5 { #expect(harness.send(Int64(seq)).submitted.count == 1) }  // the $0.50 reservation
        #expect(harness.grantRequests.count == 1, "a top-up is asked for before the grant runs out, once")
        // Frames within the top-up on its way are priced on it (a burst does not wait for the
        // database); the first beyond it waits.
        let asked = harness.grantRequests[0].want
        var seq: Int64 = 6
        while ((try? harness.core.grantAudit()[0].available.adding(asked)) ?? .zero) > .zero { harness.send(seq); seq += 1 }
        #expect(harness.inFlight.count == Int(seq - 1))
        let waiting = harness.send(seq)
        #expect(waiting.submitted.isEmpty)
        #expect(waiting.errors.isEmpty, "it waits in the server: the sender need not resend it")
        #expect(harness.answerGrant().submitted == [EventKey(callID: "C1", seq: seq)], "the answer takes it")
    }

    @Test func withTheDatabaseAwayAFrameBeyondTheGrantIsRefusedForNowNotPriced() {
        var harness = CoreHarness(policy: Self.monthLimit)
        harness.startCall()
        harness.answersGrants = false
        var seq: Int64 = 1
        while harness.grantRequests.isEmpty { harness.send(seq); seq += 1 }
        harness.answerGrant(failing: true)  // no other request for a second
        while harness.core.grantAudit()[0].available > .zero { harness.send(seq); seq += 1 }
        let refused = harness.send(seq)
        #expect(refused.submitted.isEmpty)
        #expect(refused.errors.map(\.code) == [.overloaded])
        harness.advance(seconds: 1)
        #expect(harness.send(seq).submitted.isEmpty, "the retry is on its way: it waits")
        #expect(harness.answerGrant().submitted == [EventKey(callID: "C1", seq: seq)])
    }

    @Test func whenTheLedgerHasNothingMoreTheUsersCallsAreCutOffAndLaterUsageIsStillTaken() {
        var harness = CoreHarness(policy: Self.monthLimit)
        harness.grantRoom = d("1.00")
        harness.startCall("C1")
        harness.startCall("C2")
        for seq in 1...9 { #expect(harness.send(Int64(seq)).cutoffs.isEmpty) }
        let spent = harness.send(10)
        #expect(spent.cutoffs == [.month, .month], "the grant is spent and the ledger has no more: both calls here are cut off")
        #expect(harness.send(11).submitted.count == 1, "usage after a cutoff is recorded, never dropped")
        let stored = harness.inFlight.reduce(ExactDecimal.zero) { (try? $0.adding($1.pricing.cost ?? .zero)) ?? $0 }
        #expect(stored == d("1.10"), "ten frames within the grant, one sent before the cutoff arrived")
    }

    @Test func theGrantGoesBackWhenTheUsersLastCallEnds() {
        var harness = CoreHarness(policy: Self.monthLimit)
        harness.startCall()
        harness.send(1)
        harness.commit()
        harness.feed(.callEnd(CallEnd(callID: "C1", endedAt: nil), from: harness.connection))
        let ended = harness.feed(.committed(LedgerCommit(events: [], endings: [EndedCall(ending: harness.actions.endings[0], applied: true, costByService: [])])))
        let release = ended.grantRequests.last
        #expect(release?.purpose == .release)
        #expect(release?.keep == .zero)
        #expect(harness.core.grantAudit().isEmpty)
    }

    @Test func aGrantWhoseLeaseRanOutIsNotSpentUntilRenewed() {
        var harness = CoreHarness(policy: Self.monthLimit)
        harness.startCall()
        harness.answersGrants = false
        harness.advance(seconds: 61)  // past the 60 s lease, no tick in between
        let late = harness.send(1)
        #expect(late.submitted.isEmpty, "not priced on a lease that ran out")
        #expect(harness.grantRequests.last?.purpose == .topUp, "the grant is taken again")
        #expect(harness.answerGrant().submitted.count == 1)
    }

    @Test func theLeasesOfManyUsersAreRenewedTogetherInOneRequest() {
        var harness = CoreHarness(policy: Self.monthLimit)
        for (call, user) in [("C1", "u1"), ("C2", "u2"), ("C3", "u3")] { harness.startCall(call, user: user) }
        harness.advance(seconds: 21)  // past a third of the 60 s lease
        let tick = harness.feed(.tick)
        #expect(tick.grantRenewals.map(\.userIDs) == [["u1", "u2", "u3"]])
        #expect(tick.grantRequests.isEmpty, "no request per user: 10,000 users with a frame a second cost one statement")
        harness.advance(seconds: 50)  // 71 s after the grants were taken, 50 s after the renewal
        #expect(harness.send(1, call: "C1").submitted.count == 1, "priced on the renewed lease")
    }

    @Test func aGrantTheLedgerNoLongerHeldAtRenewalIsTakenAgainBeforeItIsSpent() {
        var harness = CoreHarness(policy: Self.monthLimit)
        harness.startCall("C1", user: "u1")
        harness.startCall("C2", user: "u2")
        harness.leasesGoneAtLedger = ["u1"]
        harness.answersGrants = false
        harness.advance(seconds: 21)
        let tick = harness.feed(.tick)
        #expect(tick.grantRenewals.map(\.userIDs) == [["u1", "u2"]])
        #expect(harness.grantRequests.map(\.userID) == ["u1"], "only u1's grant is asked for again")
        #expect(harness.send(1, call: "C1").submitted.isEmpty, "not priced until the ledger holds it again")
        #expect(harness.send(1, call: "C2").submitted.count == 1)
        #expect(harness.answerGrant().submitted == [EventKey(callID: "C1", seq: 1)])
    }

    @Test func aFailedReservationRefusesTheStartForNowAndFramesWaitForTheRetry() {
        var harness = CoreHarness(policy: Self.monthLimit)
        harness.answersGrants = false
        harness.startCall()
        let refused = harness.answerGrant(failing: true)
        #expect(refused.errors.map(\.code) == [.overloaded])
        #expect(harness.core.liveCallCount == 0)
        #expect(refused.marks == ["rejected"], "its retry is a new admission")
    }

    @Test func theLedgerAlwaysHoldsWhatTheCoreMayStillPriceAndHasOnItsWay() {
        var harness = CoreHarness(policy: Self.monthLimit)
        harness.grantRoom = d("2.00")
        harness.startCall()
        for seq in 1...12 {
            harness.send(Int64(seq))
            if seq % 3 == 0 { harness.commit() }
            let held = harness.actions.grantRequests.last.map { harness.grantAnswer(to: $0).held } ?? .zero
            for grant in harness.core.grantAudit() {
                #expect(held >= ((try? grant.inFlight.adding(grant.available)) ?? .zero))
            }
        }
    }

    @Test func stoppingReturnsAllButTheFramesOnTheirWay() {
        var harness = CoreHarness(policy: Self.monthLimit)
        harness.startCall()
        harness.send(1)
        harness.send(2)
        harness.commit([1])
        let stop = harness.feed(.releaseGrants)
        #expect(stop.grantRequests.map(\.keep) == [d("0.10")])
        #expect(harness.send(3).errors.map(\.code) == [.overloaded], "nothing more is priced")
    }

    // Found by the simulation (seed 1, step 510): a call resumed on a core where its user was
    // new spent without a grant.
    @Test func aResumedCallSpendsThroughAGrantToo() {
        var harness = CoreHarness(policy: Self.monthLimit)
        harness.grantRoom = .zero
        let resumed = harness.startCall(isNew: false, committed: [1])
        #expect(harness.core.grantAudit().map(\.userID) == ["u1"])
        #expect(resumed.cutoffs == [.month], "no grant to be had: it is cut off, not priced as if there were no limits")
    }

    // Found by the simulation (seed 296): limits that stopped cutting off admitted the calls
    // waiting for a reservation, and the first of them, whose sender had left, dropped the user
    // while the others still referred to it.
    @Test func callsWaitingForAReservationAreAdmittedWhenTheLimitsStopCuttingOff() {
        var harness = CoreHarness(policy: Self.monthLimit)
        harness.answersGrants = false
        harness.startCall("C1", on: ClientConnection(7))
        harness.feed(.connectionClosed(ClientConnection(7)))
        harness.startCall("C2")
        harness.feed(.budgetSettingsChanged)
        let refreshed = harness.feed(.budgetsRefreshed(["u1": UserBudgetSnapshot(settings: BudgetSettings(autoCutoff: false), daySpent: .zero,
                                                                                 monthSpent: .zero)], asOf: harness.now))
        #expect(refreshed.sent.contains { if case .callAccepted("C2", _, _, _) = $0 { true } else { false } })
        harness.send(1, call: "C2", requests: 40)
        #expect(harness.core.audit().first { $0.callID == "C2" }?.spent.month == d("4.00"), "its user is the one this core keeps")
    }
}

extension PricingOutcome {
    var cost: ExactDecimal? { if case .priced(let priced) = self { priced.totalCost } else { nil } }
}
