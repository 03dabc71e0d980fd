import VoiceMeterDomain

/// The seed prices and seed 002's canonical 5-minute call, as benchmark input.
enum BenchmarkPrices {
    static let start = Timestamp(rfc3339: "2025-01-01T00:00:00Z")!

    static let seedBook = PriceBook([
        version(1, "twilio", "voice_outbound", "", .minutes, "0.014", increment: "60"),
        version(3, "deepgram", "stt_streaming", "nova-2", .minutes, "0.0059", increment: "1"),
        version(4, "cerebras", "chat_completion", "llama3.1-8b", .tokens, "0.0000001"),
        version(10, "elevenlabs", "tts_generation", "eleven_turbo_v2_5", .characters, "0.00015"),
    ])

    static let callStart = Timestamp(rfc3339: "2026-11-22T18:00:00Z")!

    static var canonicalCallFrames: [MeteredUsage] {
        func frame(_ service: String, _ operation: String, _ model: String?, _ unit: UsageUnit, _ amount: String, _ offset: Int64) -> MeteredUsage {
            MeteredUsage(service: service, operation: operation, model: model, unit: unit, amount: ExactDecimal(amount)!, occurredAt: callStart.adding(seconds: offset))
        }
        return (1...10).map { frame("twilio", "voice_outbound", nil, .seconds, "30", Int64($0) * 30) }
            + (1...30).map { frame("deepgram", "stt_streaming", "nova-2", .seconds, "10", Int64($0) * 10) }
            + (1...5).flatMap { [frame("cerebras", "chat_completion", "llama3.1-8b", .inputTokens, "6000", Int64($0) * 60 - 5),
                                  frame("cerebras", "chat_completion", "llama3.1-8b", .outputTokens, "4000", Int64($0) * 60 - 4)] }
            + (1...20).map { frame("elevenlabs", "tts_generation", "eleven_turbo_v2_5", .characters, "100", Int64($0) * 15) }
    }

    private static func version(_ id: Int64, _ service: String, _ operation: String, _ model: String, _ unit: UsageUnit,
                                _ price: String, increment: String? = nil) -> PriceVersion {
        PriceVersion(id: id, key: PriceKey(service: service, operation: operation, model: model, unit: unit),
                     rule: .perUnit(unitPrice: ExactDecimal(price)!), billingIncrement: increment.flatMap { ExactDecimal($0) }, effectiveFrom: start)
    }
}
