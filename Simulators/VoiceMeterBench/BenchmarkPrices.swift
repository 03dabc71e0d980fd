import VoiceMeterDomain
import VoiceMeterSimulation
import VoiceMeterStore

/// The seed prices and seed 002's canonical 5-minute call, as benchmark input.
enum BenchmarkPrices {
    static let start = Timestamp(rfc3339: "2025-01-01T00:00:00Z")!

    static let seedBook = PriceBook([
        version(1, "twilio", "voice_outbound", "", .minutes, "0.014", increment: "60"),
        version(3, "deepgram", "stt_streaming", "nova-2", .minutes, "0.0059", increment: "1"),
        version(4, "cerebras", "chat_completion", "llama3.1-8b", .tokens, "0.0000001"),
        version(10, "elevenlabs", "tts_generation", "eleven_turbo_v2_5", .characters, "0.00015"),
    ])

    /// Five minutes before the benchmark started, so the calls' usage (5 minutes long) is stamped
    /// in the past of the server it goes to, in the periods the server's budgets are in.
    static let callStart = Timestamp.now.adding(seconds: -300)

    /// Seed 002's canonical call from `callStart`.
    static let canonicalCallFrames = CallShape.canonicalCall(startedAt: callStart)

    private static func version(_ id: Int64, _ service: String, _ operation: String, _ model: String, _ unit: UsageUnit,
                                _ price: String, increment: String? = nil) -> PriceVersion {
        PriceVersion(id: id, key: PriceKey(service: service, operation: operation, model: model, unit: unit),
                     rule: .perUnit(unitPrice: ExactDecimal(price)!), billingIncrement: increment.flatMap { ExactDecimal($0) }, effectiveFrom: start)
    }
}
