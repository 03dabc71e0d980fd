import MeteringCore
import Testing
import VoiceMeterDomain

/// A usage frame the decoder refuses (a field missing or malformed) names its call and seq, and is
/// answered by metering: carried by the connection, its seq is settled as refused for good, so the
/// call's acks pass it; otherwise it is `unknown_call`, so the sender starts the call and resends it.
@Suite struct DecodingRefusalTests {
    private func malformed(_ seq: Int64, call: String = "C1") -> ProtocolError {
        ProtocolError(.invalidField, "'model' is longer than 100 characters", callID: call, seq: seq)
    }

    @Test func aFrameRefusedAtDecodingIsSettledSoLaterFramesAreAcknowledged() {
        var harness = CoreHarness()
        harness.startCall()
        harness.send(1)
        let refused = harness.feed(.refusedAtDecoding(malformed(2), from: harness.connection))
        #expect(refused.errors.map(\.code) == [.invalidField])
        #expect(refused.contains { if case .recordUndecodedFrame(_, 2, .malformed, _) = $0 { true } else { false } },
                "kept, so a call resumed elsewhere settles it too")
        harness.send(3)
        #expect(harness.commit().acks == [3])
        #expect(harness.send(2).errors.map(\.code) == [.invalidField], "a resend of the seq gets the same answer")
    }

    @Test func aRefusalForACallStillBeingAdmittedIsAppliedInOrderOnceItIs() {
        var harness = CoreHarness()
        harness.feed(.callStart(CallStart(callID: "C1", userID: "u1", startedAt: harness.now), from: harness.connection))
        harness.send(1)
        harness.feed(.refusedAtDecoding(malformed(2), from: harness.connection))
        harness.send(3)
        harness.feed(.registered(callID: "C1", .registered(RegisteredCall(userID: "u1", isNew: true, startedAt: harness.now, committedEvents: [],
                                                                         generation: 1)),
                                 UserBudgetSnapshot(settings: BudgetSettings(), daySpent: .zero, monthSpent: .zero), asOf: harness.now))
        #expect(harness.commit().acks == [3])
    }

    @Test func onlyTheConnectionCarryingTheCallSettlesItsSeqs() {
        var harness = CoreHarness()
        harness.startCall()
        let intruding = harness.feed(.refusedAtDecoding(malformed(1), from: ClientConnection(2)))
        #expect(intruding.errors.map(\.code) == [.unknownCall], "not settled: the sender must start the call on its connection")
        harness.send(1)
        #expect(harness.commit().acks == [1], "another connection's garbage burnt nothing")
        let unknown = harness.feed(.refusedAtDecoding(malformed(1, call: "C9"), from: harness.connection))
        #expect(unknown.errors.map(\.code) == [.unknownCall])
    }
}
