import Testing
import VoiceMeterDomain

@Suite("What a client sends and reads (protocol v1)")
struct ClientCodecTests {
    let instant = Timestamp(rfc3339: "2026-11-22T18:00:30.25Z")!

    @Test("every client message a client encodes decodes on the server to the same value")
    func clientMessagesRoundTrip() throws {
        let usage = MeteredUsage(service: "cerebras", operation: "chat_completion", model: "llama3.1-8b", unit: .inputTokens,
                                 amount: ExactDecimal("6000.5")!, occurredAt: instant)
        let messages: [ClientMessage] = [
            .callStart(CallStart(callID: "CA\"1", userID: "u-1", personaID: "brad", startedAt: instant, revenue: ExactDecimal("4.99"),
                                 currency: "EUR", paymentMethod: "apple_pay")),
            .callStart(CallStart(callID: "CA2", userID: "u-2")),
            .usage(UsageFrame(callID: "CA1", seq: 7, usage: usage, externalID: "ext-7", metadataJSON: #"{"turn":3,"tags":["a"]}"#)),
            .usage(UsageFrame(callID: "CA1", seq: 8, usage: MeteredUsage(service: "twilio", operation: "voice_outbound", unit: .seconds,
                                                                          amount: ExactDecimal(30), occurredAt: instant))),
            .callEnd(CallEnd(callID: "CA1", endedAt: instant)),
            .callEnd(CallEnd(callID: "CA1", endedAt: nil)),
        ]
        for message in messages {
            #expect(try ClientMessageDecoder.decode(Array(message.json.utf8)).get() == message, "\(message.json)")
        }
    }

    @Test("amounts go out as decimal strings, never as binary floating point")
    func amountsAsStrings() {
        let frame = UsageFrame(callID: "C", seq: 1, usage: MeteredUsage(service: "deepgram", operation: "stt_streaming", unit: .seconds,
                                                                       amount: ExactDecimal("0.1")!, occurredAt: instant))
        #expect(ClientMessage.usage(frame).json.contains(#""amount":"0.1""#))
        #expect(ClientMessage.usage(frame).json == frame.auditJSON)
    }

    @Test("every server message reads back to the message the server wrote")
    func serverMessagesRoundTrip() {
        let messages: [ServerMessage] = [
            .callAccepted(callID: "CA1", callLimit: ExactDecimal(10), monthSpent: ExactDecimal("3.2")!, monthLimit: ExactDecimal(100)),
            .callRejected(callID: "CA1", reason: "month_budget_exhausted", spent: ExactDecimal("100.02"), limit: ExactDecimal(100)),
            .callRejected(callID: "CA1", reason: "duplicate_call", spent: nil, limit: nil),
            .ack(callID: "CA1", seq: 17),
            .budgetWarning(callID: "CA1", scope: .call, spent: ExactDecimal("7.52")!, limit: ExactDecimal(10), percent: ExactDecimal("75.2")!),
            .budgetCutoff(callID: "CA1", scope: .month, spent: ExactDecimal("100.01")!, limit: ExactDecimal(100)),
            .callSummary(callID: "CA1", cost: ExactDecimal("0.4045")!, byService: [("cerebras", ExactDecimal("0.005")!), ("twilio", ExactDecimal("0.07")!)],
                         revenue: ExactDecimal("4.99"), paymentFee: ExactDecimal("0.46966"), margin: ExactDecimal("4.11584")),
            .error(ProtocolError(.seqConflict, "seq 5 was already used for different content", callID: "CA1", seq: 5)),
            .error(ProtocolError(.invalidJSON, "the message is not valid JSON")),
        ]
        for message in messages {
            #expect(ServerMessage(json: message.json) == message, "\(message.json)")
        }
    }

    @Test("text that is not a v1 server message is not mistaken for one; unknown error codes read as internal")
    func unreadableServerText() {
        for text in ["", "[]", #"{"type":"ack","call_id":"C"}"#, #"{"type":"call.teleport","call_id":"C"}"#,
                     #"{"type":"budget.cutoff","call_id":"C","scope":"year","spent":"1","limit":"1"}"#] {
            #expect(ServerMessage(json: text) == nil, "\(text)")
        }
        let future = ServerMessage(json: #"{"type":"error","code":"quota_exceeded","message":"later"}"#)
        #expect(future == .error(ProtocolError(.internal, "later")))
    }
}
