import Testing
import VoiceMeterDomain

@Suite("Protocol v1 codec")
struct ProtocolCodecTests {
    let now: UInt64 = 1_000_000_000

    /// The protocol document's usage example.
    let usageExample = #"{"type":"usage","call_id":"CA0001","seq":1,"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"voice_outbound","amount":"30","unit":"seconds","model":null,"external_id":"CA0001-tw-1","metadata":{"direction":"outbound"}}"#
    let startExample = #"{"type":"call.start","call_id":"CA0001","user_id":"7b0f3a0e-5a7e-4a53-9a40-6a3f7d1b2c10","persona_id":"brad","ts":"2026-11-22T18:00:00Z","revenue":"4.99","currency":"USD","payment_method":"card"}"#

    private func decode(_ text: String) -> Result<ClientMessage, ProtocolError> {
        ClientMessageDecoder.decode(Array(text.utf8))
    }

    private func session(_ limits: IngressLimits = IngressLimits()) -> IngressSession {
        IngressSession(limits: limits, nowNanoseconds: now)
    }

    @Test("the documented usage example decodes exactly")
    func usageExampleDecodes() throws {
        guard case .success(.usage(let frame)) = decode(usageExample) else { Issue.record("not a usage frame"); return }
        #expect(frame.callID == "CA0001")
        #expect(frame.seq == 1)
        #expect(frame.usage == MeteredUsage(service: "twilio", operation: "voice_outbound", model: nil, unit: .seconds,
                                            amount: ExactDecimal(30), occurredAt: Timestamp(rfc3339: "2026-11-22T18:00:30Z")!))
        #expect(frame.externalID == "CA0001-tw-1")
        #expect(frame.metadataJSON == #"{"direction":"outbound"}"#)
    }

    @Test("the documented call.start and call.end examples decode, with defaults for optional fields")
    func startAndEnd() {
        guard case .success(.callStart(let start)) = decode(startExample) else { Issue.record("not a call.start"); return }
        #expect(start.userID == "7b0f3a0e-5a7e-4a53-9a40-6a3f7d1b2c10")
        #expect(start.revenue == ExactDecimal("4.99"))
        #expect(start.personaID == "brad")
        guard case .success(.callStart(let minimal)) = decode(#"{"type":"call.start","call_id":"C","user_id":"u"}"#) else {
            Issue.record("minimal call.start refused"); return
        }
        #expect(minimal.currency == "USD")
        #expect(minimal.paymentMethod == "card")
        #expect(minimal.startedAt == nil)
        #expect(decode(#"{"type":"call.end","call_id":"CA0001","ts":"2026-11-22T18:05:00Z"}"#)
                == .success(.callEnd(CallEnd(callID: "CA0001", endedAt: Timestamp(rfc3339: "2026-11-22T18:05:00Z")))))
    }

    @Test("numbers and strings, member order and unknown fields do not change a frame or its canonical content")
    func equivalentSpellings() throws {
        let variants = [
            usageExample,
            #"{"unit":"seconds","amount":30,"service":"twilio","seq":1,"type":"usage","call_id":"CA0001","operation":"voice_outbound","ts":1795370430,"external_id":"CA0001-tw-1","metadata":{"direction":"outbound"},"future_field":[1,2]}"#,
            #"{ "type" : "usage", "call_id":"CA0001", "seq":1, "ts":"2026-11-22T19:00:30+01:00", "service":"twilio", "operation":"voice_outbound", "amount":3.0e1, "unit":"seconds", "external_id":"CA0001-tw-1", "metadata":{ "direction" : "outbound" } }"#,
        ]
        let decoded = variants.map { decode($0) }
        guard case .success(.usage(let reference)) = decoded[0] else { Issue.record("reference did not decode"); return }
        for result in decoded {
            guard case .success(.usage(let frame)) = result else { Issue.record("variant did not decode: \(result)"); continue }
            #expect(frame.canonicalContent == reference.canonicalContent)
        }
        var changed = reference
        changed.usage.amount = ExactDecimal(31)
        #expect(changed.canonicalContent != reference.canonicalContent)
    }

    @Test("the canonical content keeps its exact bytes: hashes stored by earlier versions still match resends")
    func canonicalContentIsStable() throws {
        guard case .success(.usage(let frame)) = decode(usageExample) else { Issue.record("example did not decode"); return }
        let expected = "2:v16:CA00011:120:2026-11-22T18:00:30Z6:twilio14:voice_outbound0:2:307:seconds11:CA0001-tw-124:{\"direction\":\"outbound\"}"
        #expect(String(decoding: frame.canonicalContent, as: UTF8.self) == expected)
        var bare = frame
        bare.usage.model = "gpt-4o"
        bare.usage.occurredAt = Timestamp(microsecondsSinceEpoch: 1_795_370_430_134_000)
        bare.externalID = nil
        bare.metadataJSON = nil
        #expect(String(decoding: bare.canonicalContent, as: UTF8.self)
                == "2:v16:CA00011:124:2026-11-22T18:00:30.134Z6:twilio14:voice_outbound6:gpt-4o2:307:seconds0:0:")
        // A reused buffer holds exactly the last frame written into it.
        var buffer: [UInt8] = []
        frame.writeCanonicalContent(into: &buffer)
        bare.writeCanonicalContent(into: &buffer)
        #expect(buffer == bare.canonicalContent)
        bare.seq = 1234567890
        bare.usage.amount = ExactDecimal("1234567.000000001")!
        #expect(String(decoding: bare.canonicalContent, as: UTF8.self)
                == "2:v16:CA000110:123456789024:2026-11-22T18:00:30.134Z6:twilio14:voice_outbound6:gpt-4o17:1234567.0000000017:seconds0:0:")
    }

    @Test("every malformed message gets its exact error code", arguments: [
        ("not json", ProtocolErrorCode.invalidJSON),
        ("[1,2]", .invalidJSON),
        (#"{"type":"usage","call_id":"C","seq":1,"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"voice_outbound","amount":"30","unit":"seconds"} extra"#, .invalidJSON),
        (#"{"call_id":"C"}"#, .missingField),
        (#"{"type":"call.pause","call_id":"C"}"#, .unknownType),
        (#"{"type":"usage","seq":1}"#, .missingField),
        (#"{"type":"call.start","call_id":"C"}"#, .missingField),
        (#"{"type":"usage","call_id":"C","ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"o","amount":"30","unit":"seconds"}"#, .missingField),
        (#"{"type":"usage","call_id":"C","seq":0,"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"o","amount":"30","unit":"seconds"}"#, .invalidField),
        (#"{"type":"usage","call_id":"C","seq":1.5,"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"o","amount":"30","unit":"seconds"}"#, .invalidField),
        (#"{"type":"usage","call_id":"C","seq":"1","ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"o","amount":"30","unit":"seconds"}"#, .invalidField),
        (#"{"type":"usage","call_id":"C","seq":1,"service":"twilio","operation":"o","amount":"30","unit":"seconds"}"#, .missingField),
        (#"{"type":"usage","call_id":"C","seq":1,"ts":"yesterday","service":"twilio","operation":"o","amount":"30","unit":"seconds"}"#, .invalidTimestamp),
        (#"{"type":"usage","call_id":"C","seq":1,"ts":true,"service":"twilio","operation":"o","amount":"30","unit":"seconds"}"#, .invalidTimestamp),
        (#"{"type":"usage","call_id":"C","seq":1,"ts":"0000-01-01T00:00:00Z","service":"twilio","operation":"o","amount":"30","unit":"seconds"}"#, .invalidTimestamp),
        (#"{"type":"usage","call_id":"C","seq":1,"ts":-5,"service":"twilio","operation":"o","amount":"30","unit":"seconds"}"#, .invalidTimestamp),
        (#"{"type":"call.start","call_id":"C","user_id":"u","ts":"0001-01-01T00:00:00Z"}"#, .invalidTimestamp),
        (#"{"type":"usage","call_id":"C","seq":1,"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"o","amount":"-1","unit":"seconds"}"#, .invalidAmount),
        (#"{"type":"usage","call_id":"C","seq":1,"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"o","amount":"thirty","unit":"seconds"}"#, .invalidAmount),
        (#"{"type":"usage","call_id":"C","seq":1,"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"o","amount":0.0000000001,"unit":"seconds"}"#, .invalidAmount),
        (#"{"type":"usage","call_id":"C","seq":1,"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"o","amount":1e13,"unit":"seconds"}"#, .invalidAmount),
        (#"{"type":"usage","call_id":"C","seq":1,"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"o","unit":"seconds"}"#, .missingField),
        (#"{"type":"usage","call_id":"C","seq":1,"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"o","amount":"30","unit":"hours"}"#, .invalidUnit),
        (#"{"type":"usage","call_id":"C","seq":1,"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"o","amount":"30","unit":"seconds","metadata":[1]}"#, .invalidField),
        (#"{"type":"usage","call_id":"C","seq":1,"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"o","amount":"30","unit":"seconds","metadata":{"x":"\u0000"}}"#, .invalidField),
        (#"{"type":"usage","call_id":"C","seq":1,"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"o","amount":"30","unit":"seconds","metadata":{"x":1e999999}}"#, .invalidField),
        (#"{"type":"usage","call_id":"","seq":1}"#, .invalidField),
        (#"{"type":"usage","call_id":"tab\there"}"#, .invalidField),
        (#"{"type":"call.start","call_id":"C","user_id":"u","revenue":"-4.99"}"#, .invalidAmount),
        (#"{"type":"call.start","call_id":"C","user_id":"u","currency":"usd"}"#, .invalidField),
        (#"{"type":"call.start","call_id":"C","user_id":42}"#, .invalidField),
    ])
    func malformed(text: String, code: ProtocolErrorCode) {
        guard case .failure(let error) = decode(text) else { Issue.record("accepted: \(text)"); return }
        #expect(error.code == code, "\(error.message)")
    }

    @Test("errors carry the call and seq when the message had them, and name the field")
    func errorContext() {
        guard case .failure(let error) = decode(#"{"type":"usage","call_id":"CA0001","seq":5,"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"o","amount":"-2","unit":"seconds"}"#) else {
            Issue.record("accepted"); return
        }
        #expect(error == ProtocolError(.invalidAmount, "amount must be a non-negative decimal", callID: "CA0001", seq: 5))
        #expect(ServerMessage.error(error).json == #"{"type":"error","code":"invalid_amount","message":"amount must be a non-negative decimal","call_id":"CA0001","seq":5}"#)
    }

    @Test("server messages match the protocol document's examples")
    func serverMessages() {
        #expect(ServerMessage.ack(callID: "CA0001", seq: 17).json == #"{"type":"ack","call_id":"CA0001","seq":17}"#)
        #expect(ServerMessage.callAccepted(callID: "CA0001", callLimit: ExactDecimal("10.00")!, monthSpent: ExactDecimal("3.20")!, monthLimit: ExactDecimal("100.00")!).json
                == #"{"type":"call.accepted","call_id":"CA0001","call_limit":"10","month_spent":"3.2","month_limit":"100"}"#)
        #expect(ServerMessage.budgetWarning(callID: "CA0001", scope: .call, spent: ExactDecimal("7.52")!, limit: ExactDecimal("10")!, percent: ExactDecimal("75.2")!).json
                == #"{"type":"budget.warning","call_id":"CA0001","scope":"call","spent":"7.52","limit":"10","percent":"75.2"}"#)
        let summary = ServerMessage.callSummary(
            callID: "CA0001", cost: ExactDecimal("0.4045")!,
            byService: [("twilio", ExactDecimal("0.07")!), ("deepgram", ExactDecimal("0.0295")!), ("cerebras", ExactDecimal("0.005")!), ("elevenlabs", ExactDecimal("0.3")!)],
            revenue: ExactDecimal("4.99")!, paymentFee: ExactDecimal("0.46966")!, margin: ExactDecimal("4.11584")!)
        #expect(summary.json == #"{"type":"call.summary","call_id":"CA0001","cost":"0.4045","by_service":{"twilio":"0.07","deepgram":"0.0295","cerebras":"0.005","elevenlabs":"0.3"},"revenue":"4.99","payment_fee":"0.46966","margin":"4.11584"}"#)
    }

    @Test("revenue must be what calls.revenue stores exactly: more than 4 decimal places or 10^10 is invalid_amount naming the call")
    func revenueFitsItsColumn() {
        func start(revenue: String) -> Result<ClientMessage, ProtocolError> {
            decode(#"{"type":"call.start","call_id":"CA9","user_id":"u1","revenue":"\#(revenue)"}"#)
        }
        for accepted in ["4.9999", "0", "9999999999.9999", "4.99990"] {
            guard case .success(.callStart(let call)) = start(revenue: accepted) else { Issue.record("\(accepted) refused"); continue }
            #expect(call.revenue == ExactDecimal(accepted))
        }
        for refused in ["4.99999", "10000000000", "-1"] {
            guard case .failure(let error) = start(revenue: refused) else { Issue.record("\(refused) accepted"); continue }
            #expect(error.code == .invalidAmount && error.callID == "CA9", "\(refused): \(error)")
        }
    }

    @Test("a flood gets rate_limited beyond the burst, recovers with time, and is closed if it persists")
    func rateLimit() {
        var limits = IngressLimits()
        limits.messagesBurstPerConnection = 5
        limits.messagesPerSecondPerConnection = 10
        limits.rateLimitedMessagesBeforeCloseMax = 4
        var connection = session(limits)
        let message = Array(usageExample.utf8)
        for _ in 0..<5 { guard case .deliver = connection.receive(message, isBinary: false, nowNanoseconds: now) else { Issue.record("burst refused"); return } }
        guard case .reply(let limited) = connection.receive(message, isBinary: false, nowNanoseconds: now) else { Issue.record("not limited"); return }
        #expect(limited.code == .rateLimited)
        // It names the frame, so the sender keeps exactly that one and metering holds acks below it.
        #expect(limited.callID == "CA0001" && limited.seq == 1)
        // 100 ms later one token has been earned.
        guard case .deliver = connection.receive(message, isBinary: false, nowNanoseconds: now + 100_000_000) else { Issue.record("no refill"); return }
        var last: IngressAction?
        for _ in 0..<4 { last = connection.receive(message, isBinary: false, nowNanoseconds: now + 100_000_000) }
        #expect(last == .close(code: 1008, reason: "rate limit exceeded persistently"))
    }

    @Test("binary frames and invalid UTF-8 are refused as invalid_json")
    func binaryAndUTF8() {
        var connection = session()
        guard case .reply(let binary) = connection.receive(Array(usageExample.utf8), isBinary: true, nowNanoseconds: now),
              case .reply(let invalid) = connection.receive([0x7B, 0x22, 0xC3, 0x28, 0x22, 0x7D], isBinary: false, nowNanoseconds: now)
        else { Issue.record("accepted"); return }
        #expect(binary.code == .invalidJSON)
        #expect(invalid.code == .invalidJSON)
    }
}
