import Testing
import VoiceMeterDomain
import VoiceMeterSimulation

@Suite("Simulated calls are shaped like seed 002's call")
struct CallScriptTests {
    private func scripts(_ count: Int, seed: UInt64, shape: CallShape = CallShape()) -> [CallScript] {
        var random = SimulationRandom(seed: seed)
        return (0..<count).map { _ in shape.script(using: &random) }
    }

    private func total(_ script: CallScript, service: String? = nil, unit: UsageUnit) -> ExactDecimal {
        script.usage.filter { (service == nil || $0.service == service) && $0.unit == unit }
            .reduce(ExactDecimal.zero) { try! $0.adding($1.amount) }
    }

    @Test("without jitter every call is the canonical 5-minute call: 70 frames, 300 s of telephony and audio, 50,000 tokens, 2,000 characters")
    func canonicalShape() {
        var shape = CallShape()
        shape.jitter = false
        let script = scripts(1, seed: 9, shape: shape)[0]
        #expect(script.usage.count == 70)
        #expect(script.durationMilliseconds == 300_000)
        #expect(total(script, service: "twilio", unit: .seconds) == ExactDecimal(300))
        #expect(total(script, service: "deepgram", unit: .seconds) == ExactDecimal(300))
        #expect(total(script, unit: .inputTokens) == ExactDecimal(30_000))
        #expect(total(script, unit: .outputTokens) == ExactDecimal(20_000))
        #expect(total(script, unit: .characters) == ExactDecimal(2_000))
        #expect(script.usage.allSatisfy { $0.service != "openai" })
        #expect(script.usage.map(\.offsetMilliseconds) == script.usage.map(\.offsetMilliseconds).sorted())
    }

    @Test("the same seed gives the same calls; another seed other calls")
    func reproducible() {
        #expect(scripts(50, seed: 42) == scripts(50, seed: 42))
        #expect(scripts(50, seed: 42) != scripts(50, seed: 43))
    }

    @Test("varied calls keep the seed's averages: telephony covers the call, ~400 TTS characters a minute, fallback near its rate")
    func variedShape() {
        let calls = scripts(400, seed: 7)
        for script in calls {
            let covered = ExactDecimal(significand: Int128(script.durationMilliseconds), scale: 3)
            #expect(total(script, service: "twilio", unit: .seconds) == covered)
            #expect(total(script, service: "deepgram", unit: .seconds) == covered)
            #expect((270_000...330_000).contains(script.durationMilliseconds))
        }
        let characters = calls.reduce(0) { $0 + Int(total($1, unit: .characters).significand) }
        let minutes = calls.reduce(0) { $0 + Int($1.durationMilliseconds) } / 60_000
        #expect((350...450).contains(characters / minutes))
        let turns = calls.flatMap { $0.usage.filter { $0.unit == .inputTokens } }
        let fallbacks = turns.count { $0.service == "openai" && $0.model == "gpt-4-turbo" }
        #expect(fallbacks > 0)
        #expect(fallbacks * 100 < turns.count * 5, "fallback \(fallbacks) of \(turns.count) turns")
    }

    @Test("a hang-up reports the telephony seconds since the last Twilio report")
    func unreportedTelephony() {
        var shape = CallShape()
        shape.jitter = false
        let script = scripts(1, seed: 1, shape: shape)[0]
        #expect(script.unreportedTelephonySeconds(at: 75_250) == ExactDecimal("15.25"))
        #expect(script.unreportedTelephonySeconds(at: 60_000) == .zero)
    }
}

@Suite("Recorded sessions (JSON Lines)")
struct ReplayFileTests {
    @Test("records replay in offset order; call.end sets the hang-up; numbers and strings both read exactly")
    func parses() throws {
        let script = try ReplayFile.parse("""
            # a recorded session
            {"offset":"30","service":"twilio","operation":"voice_outbound","unit":"seconds","amount":"30"}
            {"offset":20.5,"service":"cerebras","operation":"chat_completion","model":"llama3.1-8b","unit":"input_tokens","amount":6000}

            {"type":"call.end","offset":"45"}
            """, revenue: ExactDecimal("4.99")!)
        #expect(script.usage.map(\.offsetMilliseconds) == [20_500, 30_000])
        #expect(script.usage[0].model == "llama3.1-8b")
        #expect(script.usage[0].amount == ExactDecimal(6_000))
        #expect(script.durationMilliseconds == 45_000)
    }

    @Test("a bad record is refused with its line number and what to write instead")
    func refusesBadRecords() {
        let cases = [
            (#"{"offset":"-1","service":"s","operation":"o","unit":"seconds","amount":"1"}"#, "'offset'"),
            (#"{"offset":"1","operation":"o","unit":"seconds","amount":"1"}"#, "'service'"),
            (#"{"offset":"1","service":"s","operation":"o","unit":"hours","amount":"1"}"#, "'unit'"),
            (#"{"offset":"1","service":"s","operation":"o","unit":"seconds","amount":"-2"}"#, "'amount'"),
            ("not json", "not a JSON object"),
        ]
        for (line, expected) in cases {
            #expect {
                try ReplayFile.parse("\n" + line, revenue: .zero)
            } throws: { error in
                let failure = error as? ReplayFile.Failure
                return failure?.line == 2 && failure?.reason.contains(expected) == true
            }
        }
        #expect(throws: ReplayFile.Failure.self) { try ReplayFile.parse("# nothing\n", revenue: .zero) }
    }
}
