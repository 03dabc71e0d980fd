import VoiceMeterDomain

/// One usage report of a scripted call, `offsetMilliseconds` after the call was answered.
public struct ScriptedUsage: Sendable, Hashable {
    public var offsetMilliseconds: Int64
    public var service: String
    public var operation: String
    public var model: String?
    public var unit: UsageUnit
    public var amount: ExactDecimal

    public init(offsetMilliseconds: Int64, service: String, operation: String, model: String?, unit: UsageUnit, amount: ExactDecimal) {
        self.offsetMilliseconds = offsetMilliseconds
        self.service = service
        self.operation = operation
        self.model = model
        self.unit = unit
        self.amount = amount
    }

    /// The usage as it happened at `callStart + offset`.
    public func metered(callStartedAt: Timestamp) -> MeteredUsage {
        MeteredUsage(service: service, operation: operation, model: model, unit: unit, amount: amount,
                     occurredAt: callStartedAt.adding(milliseconds: offsetMilliseconds))
    }
}

/// Everything a simulated call will report, in the order it reports it.
public struct CallScript: Sendable, Hashable {
    public var personaID: String
    public var revenue: ExactDecimal
    /// When the pipeline hangs up, after the last usage.
    public var durationMilliseconds: Int64
    public var usage: [ScriptedUsage]

    public init(personaID: String, revenue: ExactDecimal, durationMilliseconds: Int64, usage: [ScriptedUsage]) {
        self.personaID = personaID
        self.revenue = revenue
        self.durationMilliseconds = durationMilliseconds
        self.usage = usage
    }

    /// The Twilio seconds between the last Twilio report at or before `offset` and `offset`: what a
    /// pipeline reports when it hangs up early.
    public func unreportedTelephonySeconds(at offsetMilliseconds: Int64) -> ExactDecimal {
        let lastReport = usage.last { $0.service == "twilio" && $0.offsetMilliseconds <= offsetMilliseconds }?.offsetMilliseconds ?? 0
        return ExactDecimal(significand: Int128(offsetMilliseconds - lastReport), scale: 3).normalized
    }
}

/// How simulated calls are shaped.
public struct CallShape: Sendable, Hashable {
    /// Seconds from answer to hang-up (seed 002: 5 minutes).
    public var durationSeconds = 300
    /// Vary timing, sizes, duration (±10 %) and persona; without it every call is seed 002's
    /// canonical call (API cost exactly $0.4045 at seed prices).
    public var jitter = true
    /// Chance per LLM turn, per mille, that Cerebras is down and GPT-4 Turbo answers (seed: < 5 %).
    public var llmFallbackPerMille = 30
    /// What the caller pays per call (seed 002: $4.99).
    public var revenue = ExactDecimal(significand: 499, scale: 2)

    public init() {}
}

/// A persona's talkativeness: how many TTS characters and LLM tokens it produces, in percent of
/// the seed's average.
struct Persona {
    var id: String
    var speechPercent: Int
    var tokenPercent: Int

    static let canonical = Persona(id: "brad", speechPercent: 100, tokenPercent: 100)
    static let all = [canonical, Persona(id: "maya", speechPercent: 120, tokenPercent: 110),
                      Persona(id: "coach-lee", speechPercent: 85, tokenPercent: 90), Persona(id: "grandma-rose", speechPercent: 110, tokenPercent: 95)]
}

extension CallShape {
    /// Seed 002's 5-minute call, scaled to the shape's duration: Twilio minutes reported every
    /// 30 s, Deepgram seconds every 10 s, an LLM turn of ~10,000 tokens (60 % input) each minute,
    /// ~400 TTS characters a minute in sentence-sized frames.
    public func script(using random: inout SimulationRandom) -> CallScript {
        let persona = jitter ? Persona.all.randomElement(using: &random)! : Persona.canonical
        let durationMilliseconds = Int64(jitter ? random.around(durationSeconds * 1_000, spread: durationSeconds * 100) : durationSeconds * 1_000)
        var usage: [ScriptedUsage] = []
        func report(_ at: Int64, _ service: String, _ operation: String, _ model: String?, _ unit: UsageUnit, _ amount: ExactDecimal) {
            usage.append(ScriptedUsage(offsetMilliseconds: min(at, durationMilliseconds), service: service, operation: operation,
                                       model: model, unit: unit, amount: amount))
        }
        /// Reports elapsed seconds of a metered stream every `interval`, the remainder at hang-up.
        func cadence(every interval: Int64, _ service: String, _ operation: String, _ model: String?) {
            var reported: Int64 = 0
            while reported < durationMilliseconds {
                let next = min(reported + interval, durationMilliseconds)
                report(next, service, operation, model, .seconds, ExactDecimal(significand: Int128(next - reported), scale: 3).normalized)
                reported = next
            }
        }
        cadence(every: 30_000, "twilio", "voice_outbound", nil)
        cadence(every: 10_000, "deepgram", "stt_streaming", "nova-2")
        var minute: Int64 = 0
        while minute * 60_000 + 21_000 <= durationMilliseconds {
            let turnAt = minute * 60_000 + Int64(jitter ? random.around(20_000, spread: 8_000) : 20_000)
            let input = random.around(6_000, spread: jitter ? 1_500 : 0) * persona.tokenPercent / 100
            let output = random.around(4_000, spread: jitter ? 1_000 : 0) * persona.tokenPercent / 100
            let (service, model) = jitter && random.chance(perMille: llmFallbackPerMille) ? ("openai", "gpt-4-turbo") : ("cerebras", "llama3.1-8b")
            report(turnAt, service, "chat_completion", model, .inputTokens, ExactDecimal(input))
            report(turnAt + 1_000, service, "chat_completion", model, .outputTokens, ExactDecimal(output))
            for sentence in 0..<4 {
                let at = minute * 60_000 + Int64(sentence) * 15_000 + Int64(jitter ? random.around(5_000, spread: 4_000) : 5_000)
                guard at <= durationMilliseconds else { break }
                let characters = random.around(100, spread: jitter ? 40 : 0) * persona.speechPercent / 100
                report(at, "elevenlabs", "tts_generation", "eleven_turbo_v2_5", .characters, ExactDecimal(characters))
            }
            minute += 1
        }
        usage.sort { $0.offsetMilliseconds < $1.offsetMilliseconds }
        return CallScript(personaID: persona.id, revenue: revenue, durationMilliseconds: durationMilliseconds, usage: usage)
    }
}

extension CallShape {
    /// Seed 002's canonical 5-minute call as it happened from `startedAt`: 70 reports costing
    /// exactly $0.4045 at seed prices (the benchmarks' input).
    public static func canonicalCall(startedAt: Timestamp) -> [MeteredUsage] {
        var shape = CallShape()
        shape.jitter = false
        var random = SimulationRandom(seed: 0)
        return shape.script(using: &random).usage.map { $0.metered(callStartedAt: startedAt) }
    }
}
